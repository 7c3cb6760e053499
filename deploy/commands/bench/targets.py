"""What to benchmark: the backend, its file or model, and the checks made before any work.

``resolve_target`` turns command-line choices into a ``BenchTarget`` and refuses
contradictions (``BenchUsageError``, CLI exit 2); ``check_cases`` refuses shapes
an engine cannot take (exit 2); ``check_environment`` refuses what this machine
lacks (``BackendUnavailable``, exit 1). Only ``open_runners`` loads anything.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...backends import BACKENDS as _BACKEND_TABLE
from ...errors import DeployError, OptionError, words
from ...runners.base import Runner
from .timing import Case

__all__ = [
    "BACKENDS",
    "BenchUsageError",
    "BenchTarget",
    "resolve_target",
    "check_cases",
    "check_environment",
    "open_runners",
    "macs_per_image",
]

BACKENDS: tuple[str, ...] = tuple(_BACKEND_TABLE)


#: a benchmark request that contradicts itself or its model file (CLI exit 2): the common usage error
BenchUsageError = OptionError


@dataclass(frozen=True)
class BenchTarget:
    """One backend with everything needed to open its runner(s)."""

    backend: str
    device: str
    precision: str | None = None  # torch: fp32/fp16; files: what they were built with (None = unknown yet)
    runtime_precision: str | None = None  # backends that choose precision at run time (OpenVINO's hint)
    variant: str | None = None
    weights: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    compile: bool = False
    cuda_graph: bool = False
    streams: int = 1
    threads: int | None = None
    kind: str = "classifier"  # the model file's, read by check_cases; a PyTorch variant is a classifier

    @property
    def model_path(self) -> Path | None:
        return self.onnx or self.engine

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "runtime_precision": self.runtime_precision,
            "variant": self.variant,
            "weights": str(self.weights) if self.weights else None,
            "model_path": str(self.model_path) if self.model_path else None,
            "compile": self.compile,
            "cuda_graph": self.cuda_graph,
            "streams": self.streams,
            "threads": self.threads,
        }


def resolve_target(
    *,
    variant: str | None = None,
    backend: str | None = None,
    onnx: str | os.PathLike[str] | None = None,
    engine: str | os.PathLike[str] | None = None,
    device: str | None = None,
    precision: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    compile: bool = False,
    cuda_graph: bool = False,
    streams: int = 1,
    threads: int | None = None,
) -> BenchTarget:
    """Infer the backend (--onnx: onnxruntime, --engine: tensorrt, --variant alone: torch; see
    ``deploy.backends``) and check that the options agree; raises ``BenchUsageError``.
    Reads no file and imports no runtime."""
    from ...backends import RunnerOptions, backend_names, default_backend, takers
    from ...backends import backend as lookup

    if onnx is not None and engine is not None:
        raise BenchUsageError("give either --onnx or --engine, not both")
    given = "onnx" if onnx is not None else "engine" if engine is not None else None
    if backend is None:
        if given is None and variant is None:
            raise BenchUsageError("nothing to benchmark: give --variant (PyTorch), --onnx PATH or --engine PATH")
        backend = default_backend(given or "variant", onnx)
    b = lookup(backend)
    if given is not None:
        b.check_reads(given, onnx)
    if b.reads == "variant" and variant is None:
        raise BenchUsageError(f"--backend {backend} needs --variant")
    if b.reads == "onnx" and onnx is None:
        raise BenchUsageError(f"--backend {backend} needs --onnx PATH")
    if b.reads == "engine" and engine is None:
        raise BenchUsageError(f"--backend {backend} needs --engine PATH (build one with 'convmlp-deploy build')")
    if weights is not None and b.reads != "variant":
        raise BenchUsageError(
            f"--weights applies to --backend {' or '.join(backend_names('variant'))}; an ONNX file or engine "
            "carries its weights"
        )
    for flag, option, asked in (("--compile", "compile", compile), ("--cuda-graph", "cuda_graph", cuda_graph),
                                ("--streams > 1", "streams", streams > 1)):
        if asked and option not in b.takes:
            raise BenchUsageError(f"{flag} applies to --backend {words(takers(option))} only, not {backend}")
    if streams < 1:
        raise BenchUsageError(f"--streams must be >= 1, got {streams}")

    device = device or b.devices[0]
    if device not in ("cpu", "cuda"):
        raise BenchUsageError(f"unknown device {device!r}: choose cpu or cuda")
    if device not in b.devices:
        raise BenchUsageError(f"--backend {backend} runs on --device {' or '.join(b.devices)} only")

    runtime_precision = None
    if b.reads == "variant":  # PyTorch: the precision it computes in is the one asked for
        precision = precision or "fp32"
        if precision not in b.precisions:
            raise BenchUsageError(f"--backend {backend} offers --precision {' or '.join(b.precisions)}, not {precision!r}")
        if b.check is not None:
            b.check(RunnerOptions(device=device, precision=precision))
    elif b.precisions:
        runtime_precision = precision or "auto"
        if runtime_precision not in b.precisions:
            raise BenchUsageError(
                f"--backend {backend} offers --precision {', '.join(b.precisions)}, not {runtime_precision!r}"
            )
        precision = None  # the graph's own precision, read by check_cases
    elif precision is not None:
        choosers = [n for n, x in _BACKEND_TABLE.items() if x.precisions]
        raise BenchUsageError(
            f"--precision applies to --backend {words(choosers)}; the {'ONNX file' if onnx else 'engine'} "
            f"runs on {backend} with its precision built in"
        )
    if threads is not None and threads < 1:
        raise BenchUsageError(f"--threads must be >= 1, got {threads}")
    return BenchTarget(
        backend=backend,
        device=device,
        precision=precision,
        runtime_precision=runtime_precision,
        variant=variant.lower() if variant else None,
        weights=Path(weights) if weights is not None else None,
        onnx=Path(onnx) if onnx is not None else None,
        engine=Path(engine) if engine is not None else None,
        compile=compile,
        cuda_graph=cuda_graph,
        streams=streams,
        threads=threads,
    )


def _describe_profiles(profiles: Sequence[Any]) -> str:
    return "; ".join(f"#{i} {p}" for i, p in enumerate(profiles))


def check_cases(target: BenchTarget, cases: Sequence[Case]) -> BenchTarget:
    """Read the model file's own description (ONNX metadata, engine sidecar), fill in variant and
    precision, and refuse cases an engine's profiles do not cover (``BenchUsageError``).

    Unreadable files raise ``DeployError`` (exit 1). Returns the completed target.
    """
    if not cases:
        raise BenchUsageError("no case to benchmark")
    if target.model_path is None:
        return target
    from ...modelfile import describe
    from ...modelfile.profiles import format_shape

    facts = describe(target.model_path, "onnx" if target.onnx is not None else "engine")
    if facts.profiles:
        limit = facts.max_batch or 0
        for case in cases:
            if case.batch > limit:
                raise BenchUsageError(
                    f"batch {case.batch} is beyond the engine's largest batch {limit} "
                    f"(profiles min:opt:max {_describe_profiles(facts.profiles)})"
                )
            if not any(p.covers(case.shape) for p in facts.profiles):
                raise BenchUsageError(
                    f"input {format_shape(case.shape)} is outside every profile of {facts.name} "
                    f"(min:opt:max {_describe_profiles(facts.profiles)})"
                )
    source = "ONNX metadata" if facts.format != "engine" else "engine manifest"
    variant = _agreeing_variant(target.variant, facts.variant, source)
    return replace(target, variant=variant, precision=facts.precision, kind=facts.kind)


def _agreeing_variant(given: str | None, recorded: str | None, source: str) -> str | None:
    """``given`` (for GMACs) unless the file records another variant; the file's otherwise."""
    from convmlp import VARIANTS

    known = (recorded or "").lower().removeprefix("convmlp_").removeprefix("convmlp-")
    known_variant = known if known in VARIANTS else None
    if given and known_variant and given != known_variant:
        raise BenchUsageError(f"--variant {given} contradicts the {source}, which says variant {known_variant}")
    return given or known_variant


def check_environment(target: BenchTarget) -> None:
    """Raise ``BackendUnavailable`` (exit 1) when this machine lacks what ``target`` needs, and
    ``OptionError`` (exit 2) for a run-time precision this CPU cannot run (``Backend.check_here``)."""
    from ...backends import backend

    backend(target.backend).check_here(_options(target))


def plot_available() -> bool:
    """Whether matplotlib can be imported (for ``--plot``)."""
    return importlib.util.find_spec("matplotlib") is not None


@lru_cache(maxsize=8)
def _meta_model(variant: str, features: bool) -> Any:
    from convmlp import create_model

    return create_model(variant, features_only=features).eval().to("meta")


@lru_cache(maxsize=256)
def macs_per_image(variant: str, height: int, width: int, features: bool = False) -> int:
    """MACs of one image at ``height x width`` (counted on the meta device: no arithmetic is done)."""
    import torch

    from convmlp.profile import count_macs

    model = _meta_model(variant, features)  # built on CPU first: its init needs real tensors
    with torch.device("meta"):
        return count_macs(model, height, width)


def _options(target: BenchTarget) -> Any:
    from ...backends import RunnerOptions

    return RunnerOptions(
        device=target.device, threads=target.threads, compile=target.compile, cuda_graph=target.cuda_graph,
        precision=target.runtime_precision or (target.precision if target.onnx is None and target.engine is None
                                               else None),
        streams=target.streams, exact=False,  # timing: the runtime's own defaults
    )


def _make_runner(target: BenchTarget) -> Runner:
    from ...backends import backend

    b = backend(target.backend)
    if b.reads == "variant":
        from ...loader import reference_model

        if target.variant is None:
            raise BenchUsageError(f"--backend {target.backend} needs --variant")
        return b.open(reference_model(target.variant, target.weights), _options(target))
    return b.open(target.model_path, _options(target))


@contextmanager
def open_runners(target: BenchTarget) -> Iterator[list[Runner]]:
    """Active runner(s) for ``target``: one that takes ``streams`` queries at once where the runner is
    concurrent (OpenVINO), else ``streams`` runners (TensorRT: one execution context each)."""
    with ExitStack() as stack:
        runners = []
        first = _make_runner(target)
        if first.concurrent:
            # one runner taking ``streams`` queries at once (OpenVINO: NUM_STREAMS, one request each)
            runners = [stack.enter_context(first)] * target.streams
        else:
            runners.append(stack.enter_context(first))
            for _ in range(target.streams - 1):
                runners.append(stack.enter_context(_make_runner(target)))
        if not runners:
            raise DeployError("no runner opened")
        yield runners
