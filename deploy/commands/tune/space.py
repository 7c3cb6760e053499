"""The search space of ``tune``: every (model file, backend, run-time precision) this machine runs, times
threads, streams, batch and shape policy; and what was left out, with the reason.

The rows of ``deploy.backends`` decide everything: which files a backend reads (``reads``), the run-time
precisions it offers (``precisions``), whether it takes ``streams``, and what this machine must have for
each (``check_here``: the runtime installed, native BF16, a CUDA device). A backend or precision that
``check_here`` refuses is left out with its own message. The FP16 graph is a TensorRT graph: on a CPU no
runtime computes it in FP16 (onnxruntime's CPU provider and OpenVINO run it through casts), so it is
left out there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...backends import BACKENDS, RunnerOptions
from ...errors import BackendUnavailable, OptionError, one_line
from ...modelfile import ModelFacts
from ...precision import AUTO, run_precision
from ...shapes import DEFAULT_MAX_SPECIALIZED, ShapePolicy
from .workload import Workload

__all__ = ["ModelChoice", "Candidate", "Space", "thread_choices", "shape_policies", "static_left_out",
           "build_space"]


@dataclass(frozen=True)
class ModelChoice:
    """One model the search may run: a file with its record and sha256, or the PyTorch variant."""

    facts: ModelFacts
    sha256: str | None
    path: Path | None = None  # None: the PyTorch variant
    weights: Path | None = None  # PyTorch: the checkpoint (None: synthetic weights)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def reads(self) -> str:
        return {"pytorch": "variant", "engine": "engine"}.get(self.facts.format, "onnx")


@dataclass(frozen=True)
class Candidate:
    """One point of the space."""

    index: int
    model: ModelChoice = field(compare=False)
    backend: str
    precision: str | None  # run-time precision (OpenVINO's hint, PyTorch's dtype); None: the file's own
    threads: int | None
    streams: int
    batch: int
    policy: ShapePolicy
    cuda_graph: bool = False

    @property
    def computes(self) -> str:
        """What the run computes in (the gate's precision before the runtime says what it compiled)."""
        if self.model.facts.format == "pytorch":
            return self.precision or "fp32"
        return run_precision(self.model.facts.precision, self.precision) or "fp32"

    @property
    def gate_key(self) -> tuple[Any, ...]:
        """Candidates that compute the same numbers share one gate: (file, backend, precision)."""
        return (str(self.model.path or self.model.name), self.backend, self.precision)

    def options(self, *, exact: bool) -> RunnerOptions:
        device = BACKENDS[self.backend].devices[0]
        return RunnerOptions(device=device, precision=self.precision, threads=self.threads,
                             streams=self.streams if self.streams > 1 else None, cuda_graph=self.cuda_graph,
                             exact=exact, shapes=self.policy)

    @property
    def label(self) -> str:
        extra = ", CUDA graph" if self.cuda_graph else ""
        return (f"{self.model.name} {self.backend} {self.computes} t{self.threads or '-'} s{self.streams} "
                f"b{self.batch}{extra}")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model.name, "backend": self.backend, "precision": self.precision,
                "computes": self.computes, "threads": self.threads, "streams": self.streams, "batch": self.batch,
                "policy": self.policy.mode, "cuda_graph": self.cuda_graph}


@dataclass
class Space:
    candidates: list[Candidate]
    left_out: list[str]
    #: what each dimension took: backends, precisions, threads, streams, batches, policies
    dimensions: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"size": len(self.candidates), "left_out": list(self.left_out), "dimensions": self.dimensions}


def thread_choices(cores: int) -> list[int]:
    """All cores, then halving down to 1 (at most four values): 2 -> [2, 1], 16 -> [16, 8, 4, 1]."""
    out = [max(1, cores)]
    while out[-1] > 1 and len(out) < 3:
        out.append(max(1, out[-1] // 2))
    if out[-1] != 1:
        out.append(1)
    return out


def shape_policies(workload: Workload) -> list[ShapePolicy]:
    """Dynamic (warm-up: the workload's sizes when they fit in the bound) first, then static (one executable
    per size) when the workload's sizes fit in its bound: with more, the static policy evicts and compiles
    again on the request path at every turn of the stream, a candidate that can only lose (``static_left_out``)."""
    distinct = workload.distinct
    fits = len(distinct) <= DEFAULT_MAX_SPECIALIZED
    dynamic = ShapePolicy(warmup=tuple((1, h, w) for h, w in distinct) if fits else ())
    return [dynamic, ShapePolicy.static()] if fits else [dynamic]


def static_left_out(workload: Workload) -> str | None:
    """Why the static policy is not searched on ``workload`` (None: it is)."""
    n = len(workload.distinct)
    if n <= DEFAULT_MAX_SPECIALIZED:
        return None
    return (f"shape policy static: the workload has {n} distinct sizes, more than the {DEFAULT_MAX_SPECIALIZED} "
            "executables it keeps, so it would compile again on the request path at every turn of the stream")


def _check(name: str, options: RunnerOptions, cache: dict[Any, str | None]) -> str | None:
    """Why ``name`` cannot run ``options`` here (None: it can)."""
    key = (name, options.precision, options.device)
    if key not in cache:
        try:
            BACKENDS[name].check_here(options)
            cache[key] = None
        except (OptionError, BackendUnavailable) as exc:
            cache[key] = one_line(exc)
    return cache[key]


def build_space(
    models: Sequence[ModelChoice],
    *,
    batches: Sequence[int],
    objective: str,
    cores: int,
    workload: Workload,
    variant_mode: bool,
) -> Space:
    """Every candidate this machine can run, in order: each model file on each backend that reads it at
    each precision it offers here, × threads × streams × batch × shape policy. The first candidate (the
    first FP32 graph on the first ONNX runtime, all cores, one stream) is the search's first incumbent."""
    left_out: list[str] = []
    checked: dict[Any, str | None] = {}
    combos: list[tuple[ModelChoice, str, str | None]] = []
    for name, b in BACKENDS.items():
        if b.reads == "variant" and not variant_mode:
            left_out.append(f"{name}: runs a --variant with its checkpoint; these are --onnx graphs")
            continue
        why = _check(name, RunnerOptions(device=b.devices[0]), checked)
        if why is not None:
            left_out.append(f"{name}: {why}")
            continue
        for m in models:
            if m.reads != b.reads:
                continue
            try:
                if b.reads == "onnx":
                    b.check_reads("onnx", m.path)
            except OptionError:
                continue  # an IR on a backend that reads only ONNX: silently another backend's file
            if m.facts.precision == "fp16" and "cpu" in b.devices:
                left_out.append(f"{m.name} on {name}: no CPU runtime computes the FP16 graph in FP16 (it runs "
                                "through casts to FP32); it is TensorRT's graph")
                continue
            precisions: list[str | None] = [p for p in b.precisions if p != AUTO] if b.precisions else [None]
            for p in precisions:
                if p is not None:
                    why = _check(name, RunnerOptions(device=b.devices[0], precision=p), checked)
                    if why is not None:
                        msg = f"{name} {p}: {why}"
                        if msg not in left_out:
                            left_out.append(msg)
                        continue
                combos.append((m, name, p))
    combos.sort(key=lambda c: (c[0].reads != "onnx", c[0].facts.precision != "fp32", 0))
    threads = thread_choices(cores)
    policies = shape_policies(workload)
    why_not_static = static_left_out(workload)
    if why_not_static is not None:
        left_out.append(why_not_static)
    candidates: list[Candidate] = []
    for m, name, p in combos:
        b = BACKENDS[name]
        streams = [1, 2] if objective == "throughput" and "streams" in b.takes else [1]
        cpu = b.devices[0] == "cpu"
        graphs = [False, True] if "cuda_graph" in b.takes else [False]
        # the shape policy where the backend honours it (``takes`` names it): elsewhere the policies would
        # time the same run twice
        pols = policies if "shapes" in b.takes else policies[:1]
        for t in (threads if cpu else [None]):
            for s in streams:
                for batch in batches:
                    for pol in pols:
                        for g in graphs:
                            candidates.append(Candidate(len(candidates), m, name, p, t, s, batch, pol, g))
    dims = {
        "backends": sorted({c.backend for c in candidates}),
        "precisions": sorted({c.computes for c in candidates}),
        "threads": threads, "streams": sorted({c.streams for c in candidates}), "batches": list(batches),
        "shape_policy": [p.mode for p in policies],
        "queue_delay": "derived, not timed: 0 us for batch 1 or the latency objective; for throughput at batch "
                       "> 1, the measured median of one batch",
    }
    return Space(candidates, left_out, dims)
