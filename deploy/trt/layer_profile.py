"""TensorRT per-layer time (``benchmark --per-layer``): an ``IProfiler`` on the runner's execution context.

TensorRT calls ``report_layer_time(layer_name, ms)`` once per engine layer after each
plain enqueue (``IExecutionContext.enqueue_emits_profile`` is True by default); the
collected times go through ``deploy.bench.layers.aggregate``, like onnxruntime's.
Engine layers are TensorRT's fused layers; their names carry the ONNX node names they
came from (``stages.0.blocks.0.channel_mlp1.fc1/MatMul + ...``), and the op column is
read from the first of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..bench.layers import LayerProfile, aggregate
from ..errors import DeployError

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = ["LayerTimes", "make_profiler", "layer_op", "profile_tensorrt"]


class LayerTimes:
    """What an ``IProfiler`` heard: (layer, op, ms) per reported layer, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []

    def report(self, layer_name: str, ms: float) -> None:
        self.events.append((layer_name, layer_op(layer_name), float(ms)))


_OP = re.compile(r"/([A-Za-z]+)(?:_\d+)?(?:\b|$)")


def layer_op(layer_name: str) -> str:
    """``stages.0.blocks.0.channel_mlp1.fc1/MatMul + ...Add`` -> ``MatMul``; TensorRT's own names as they are."""
    first = layer_name.split(" + ")[0].strip()
    m = _OP.search(first)
    if m:
        return m.group(1)
    return first.split(" ")[0][:40] or "layer"


def make_profiler(times: LayerTimes) -> trt.IProfiler:
    """A TensorRT profiler that records into ``times``."""
    import tensorrt as trt

    class _Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            times.report(layer_name, ms)

    return _Profiler()


def profile_tensorrt(runner: Any, shape: tuple[int, int, int, int], *, runs: int = 20) -> LayerProfile:
    """Per-layer time of an active ``TensorRTRunner`` at ``shape``: one warm-up, then ``runs`` profiled runs."""
    import numpy as np

    if getattr(runner, "cuda_graph", False):
        raise DeployError("per-layer times come from plain enqueues: drop --cuda-graph")
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    runner.infer(x)  # warm-up: shape setup outside the profile
    times = LayerTimes()
    runner.attach_profiler(make_profiler(times))
    try:
        for _ in range(runs):
            runner.infer(x)
    finally:
        runner.attach_profiler(None)
    return aggregate(times.events, runs, backend="tensorrt", shape=list(shape))
