"""Per-layer time: where a runtime spends one case (``benchmark --per-layer``), as trtexec's
``--dumpProfile`` shows it for TensorRT.

- onnxruntime: its own profiler (``SessionOptions.enable_profiling``): one ``*_kernel_time``
  event per node and run, after onnxruntime's graph optimisations, so the nodes are the
  ones that run (``BiasGelu``, NCHWc ``Conv`` with ``ReorderInput``/``ReorderOutput``).
- TensorRT: an ``IProfiler`` on the execution context (``profile_tensorrt``); TensorRT calls
  ``report_layer_time(layer_name, ms)`` once per engine layer after every plain enqueue
  (``IExecutionContext.enqueue_emits_profile`` is True by default; not for CUDA graph replays,
  so ``--per-layer`` and ``--cuda-graph`` do not go together). Engine layers are TensorRT's
  fused layers; their names carry the ONNX node names they came from
  (``stages.0.blocks.0.channel_mlp1.fc1/MatMul + ...``), and the op column is read from the
  first of them (``layer_op``).

- OpenVINO: the CPU plugin's own counters (``PERF_COUNT``, ``InferRequest.profiling_info``,
  ``profile_openvino``), what ``benchmark_app -pc`` prints: one entry per executed node of the
  compiled graph, after OpenVINO's fusions, with its node type and the kernel that ran it
  (``exec_type``: ``brgconv_avx512_amx_I8``, ``jit_avx2_FP32``, ``ref_any_I8`` for a reference
  kernel...), so reorders, precision conversions and unquantized ops show up by name.

All feed ``aggregate``: per layer and per op type, milliseconds per run and share.
``benchmarks/ort_op_profile.py`` publishes the onnxruntime one for S/M/L.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import DeployError

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "LayerTime", "OpTime", "LayerProfile", "aggregate", "profile_onnxruntime", "profile_openvino",
    "LayerTimes", "layer_op", "make_profiler", "profile_tensorrt",
]



@dataclass
class LayerTime:
    name: str
    op: str
    ms: float  # per run
    pct: float
    exec_type: str = ""  # the kernel that ran it, where the runtime says (OpenVINO)


@dataclass
class OpTime:
    op: str
    ms: float  # per run
    pct: float
    nodes: int


@dataclass
class LayerProfile:
    """One case profiled over ``runs`` runs."""

    backend: str
    shape: list[int]
    runs: int
    total_ms: float  # kernel (or layer) time per run
    layers: list[LayerTime] = field(default_factory=list)  # in the order the runtime ran them
    ops: list[OpTime] = field(default_factory=list)  # most time first

    def top(self, n: int) -> list[LayerTime]:
        return sorted(self.layers, key=lambda t: -t.ms)[:n]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def aggregate(
    events: Iterable[tuple[str, str, float] | tuple[str, str, float, str]], runs: int, *, backend: str,
    shape: list[int],
) -> LayerProfile:
    """Sum ``(layer, op, ms[, exec type])`` events over ``runs`` runs into per-run times per layer and per
    op type."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    per_layer: dict[str, list[Any]] = {}
    for name, op, ms, *kernel in events:
        entry = per_layer.setdefault(name, [op, 0.0, kernel[0] if kernel else ""])
        entry[1] += ms
    total = sum(v[1] for v in per_layer.values())
    if total <= 0:
        raise DeployError(f"{backend} reported no layer time (was anything run?)")
    layers = [LayerTime(n, op, ms / runs, 100 * ms / total, kernel) for n, (op, ms, kernel) in per_layer.items()]
    per_op: dict[str, list[float]] = {}
    for t in layers:
        acc = per_op.setdefault(t.op, [0.0, 0])
        acc[0] += t.ms
        acc[1] += 1
    ops = sorted((OpTime(op, ms, 100 * ms * runs / total, int(n)) for op, (ms, n) in per_op.items()),
                 key=lambda o: -o.ms)
    return LayerProfile(backend, list(shape), runs, total / runs, layers, ops)


def profile_onnxruntime(
    path: str | Path, shape: tuple[int, ...], *, threads: int | None = None, runs: int = 20,
    providers: list[str] | None = None,
) -> LayerProfile:
    """Per-node kernel time of ``path`` on onnxruntime at ``shape`` (one warm-up run, then ``runs``)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="convmlp-profile-") as tmp:
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        try:
            sess = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise DeployError(f"{path}: onnxruntime cannot load it ({first})") from None
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        if inp.type == "tensor(float16)":
            x = x.astype(np.float16)
        for _ in range(runs + 1):
            sess.run(None, {inp.name: x})
        trace = json.loads(Path(sess.end_profiling()).read_text())
    run_starts = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    cutoff = run_starts[1] if len(run_starts) > 1 else None  # leave the warm-up run out
    counted = len(run_starts) - 1 if cutoff is not None else runs + 1
    events = [
        (e["name"].removesuffix("_kernel_time"), e["args"].get("op_name", "?"), e["dur"] / 1e3)
        for e in trace
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
        and (cutoff is None or e["ts"] >= cutoff)
    ]
    return aggregate(events, counted, backend="onnxruntime", shape=list(shape))


def profile_openvino(
    path: str | Path, shape: tuple[int, ...], *, precision: str | None = None, threads: int | None = None,
    runs: int = 20,
) -> LayerProfile:
    """Per-node time of ``path`` (ONNX or IR) on OpenVINO's CPU plugin at ``shape``, compiled for that shape
    with ``PERF_COUNT`` (no model cache): one warm-up run, then ``runs``; each entry carries its exec type."""
    from ...runners.openvino import OpenVINORunner

    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    events: list[tuple[str, str, float, str]] = []
    runner = OpenVINORunner(path, precision=precision or "auto", threads=threads, cache_dir="", perf_count=True)
    with runner:
        runner.infer(x)  # warm-up: compile and first-run allocations outside the profile
        for _ in range(runs):
            runner.infer(x)
            events += [(name, op, ms, kernel) for name, op, kernel, ms in runner.last_profile()]
        used = runner.precision_used
    profile = aggregate(events, runs, backend=f"openvino[CPU,{used}]", shape=list(shape))
    return profile


# --------------------------------------------------------------------------- TensorRT


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
