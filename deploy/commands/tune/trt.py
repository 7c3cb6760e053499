"""TensorRT in ``tune``: the engines to search over, built with the project's builder (``deploy.trt.builder``).

The TensorRT space is precision graph x profile set x CUDA graphs x streams. This module makes the
engines (graph x profile set); ``space.build_space`` adds CUDA graphs and streams from the TensorRT row
of ``deploy.backends`` (``cuda_graph`` and ``streams`` in its ``takes``), and the search gates and times
engines like any other file. Graphs: the FP32 graph, the FP16 graph and INT8 graphs in the TensorRT
layout (the CPU layout is for CPU runtimes). Profile sets, from the workload:

- ``one``: one profile covering every size of the stream (opt: its most frequent size);
- ``per-size``: one profile per distinct size (min = opt = max), when there are at most ``MAX_PER_SIZE``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convmlp.weights import file_sha256

from ...modelfile import describe
from ...modelfile.profiles import ShapeProfile
from .space import ModelChoice
from .workload import Workload

__all__ = ["MAX_PER_SIZE", "profile_sets", "engine_graphs", "build_engines"]

MAX_PER_SIZE = 4


def profile_sets(workload: Workload, batches: Sequence[int]) -> dict[str, list[ShapeProfile]]:
    """The profile sets an engine is built with for ``workload`` at ``batches`` (module docstring)."""
    top = max(batches)
    hs = [h for h, _ in workload.sizes]
    ws = [w for _, w in workload.sizes]
    (oh, ow), _ = Counter(workload.sizes).most_common(1)[0]
    sets = {"one": [ShapeProfile((1, 3, min(hs), min(ws)), (top, 3, oh, ow), (top, 3, max(hs), max(ws)))]}
    distinct = workload.distinct
    if 1 < len(distinct) <= MAX_PER_SIZE:
        sets["per-size"] = [ShapeProfile((1, 3, h, w), (top, 3, h, w), (top, 3, h, w)) for h, w in distinct]
    return sets


def engine_graphs(models: Sequence[ModelChoice]) -> list[ModelChoice]:
    """The graphs TensorRT builds from: ONNX files (not IRs) in FP32, FP16 or INT8's TensorRT layout."""
    return [m for m in models if m.facts.format == "onnx" and m.path is not None
            and (m.facts.precision != "int8" or m.facts.int8_layout not in (None, "cpu"))]  # not the CPU layout


def build_engines(
    models: Sequence[ModelChoice],
    workload: Workload,
    batches: Sequence[int],
    folder: Path,
    *,
    builder: Callable[..., Any] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[ModelChoice]:
    """One engine per (graph, profile set) in ``folder``, as ``ModelChoice`` records read back from their
    sidecars. ``builder``: ``deploy.trt.builder.build_engine`` (or a stand-in with its signature)."""
    if builder is None:
        from ...trt.builder import build_engine as builder
    assert builder is not None
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for m in engine_graphs(models):
        assert m.path is not None
        for name, profiles in profile_sets(workload, batches).items():
            engine = folder / f"{m.path.name.removesuffix('.onnx')}.{name}.engine"
            log(f"building {engine.name} ({len(profiles)} profile(s))")
            builder(m.path, profiles, None, engine)
            out.append(ModelChoice(describe(engine, "engine"), file_sha256(engine), engine))
    return out
