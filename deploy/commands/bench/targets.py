"""What to benchmark: one model as ``deploy.loader`` plans it, and the benchmark's own checks.

``resolve_target`` (and ``target_for``) plan the model (``deploy.loader.plan_model``: the backend
and its rules, ``OptionError``, CLI exit 2) into a ``BenchTarget``; ``check_cases`` refuses shapes an
engine cannot take (exit 2); ``check_environment`` refuses what this machine lacks
(``BackendUnavailable``, exit 1). Only ``open_runners`` loads anything, each runner from the loader.
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
from ...backends import RunnerOptions
from ...errors import DeployError, OptionError
from ...loader import ModelPlan, ModelSource, open_runner, plan_model
from ...runners.base import Runner
from .timing import Case

__all__ = [
    "BACKENDS",
    "BenchUsageError",
    "BenchTarget",
    "resolve_target",
    "target_for",
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
    """One planned model (``deploy.loader.ModelPlan``: source, backend, run-time options) and what the
    benchmark adds: the variant GMACs are counted for, the precision it computes in, the model's kind."""

    plan: ModelPlan
    variant: str | None = None  # given (for GMACs) or, after check_cases, the file's
    precision: str | None = None  # torch: fp32/fp16; files: what they were built with (None = unknown yet)
    kind: str = "classifier"  # the model file's, read by check_cases; a PyTorch variant is a classifier

    @property
    def backend(self) -> str:
        return self.plan.backend

    @property
    def device(self) -> str:
        return self.plan.options.device or self.plan.row.devices[0]

    @property
    def runtime_precision(self) -> str | None:
        """The precision a file's backend chooses at run time (OpenVINO's hint); None for the others."""
        return self.plan.options.precision if self.plan.reads != "variant" else None

    @property
    def weights(self) -> Path | None:
        return self.plan.source.weights

    @property
    def onnx(self) -> Path | None:
        return self.plan.source.onnx

    @property
    def engine(self) -> Path | None:
        return self.plan.source.engine

    @property
    def model_path(self) -> Path | None:
        return self.plan.source.path

    @property
    def compile(self) -> bool:
        return self.plan.options.compile

    @property
    def cuda_graph(self) -> bool:
        return self.plan.options.cuda_graph

    @property
    def streams(self) -> int:
        return self.plan.options.streams or 1

    @property
    def threads(self) -> int | None:
        return self.plan.options.threads

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


def target_for(source: ModelSource, backend: str | None = None, options: RunnerOptions | None = None) -> BenchTarget:
    """``source`` on ``backend`` (None: the one its kind runs on) with ``options``, as the loader plans
    it (``deploy.loader.plan_model``), timed with the runtime's own defaults (``exact=False``).
    Reads no file and imports no runtime; ``BenchUsageError`` for what contradicts itself."""
    if backend is None and source.path is None and source.variant is None:
        raise BenchUsageError("nothing to benchmark: give --variant (PyTorch), --onnx PATH or --engine PATH")
    plan = plan_model(source, backend, (options or RunnerOptions()).with_(exact=False))
    computes = plan.options.precision if plan.reads == "variant" else None  # a file's is read by check_cases
    return BenchTarget(plan, variant=source.variant, precision=computes)


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
    """``target_for`` from keywords: the backend inferred (--onnx: onnxruntime, --engine: tensorrt,
    --variant alone: torch; see ``deploy.backends``) and the options checked against it; raises
    ``BenchUsageError``. ``precision`` may be any name ``deploy.precision`` reads (``f32`` is ``fp32``).
    Reads no file and imports no runtime."""
    source = ModelSource(variant=variant.lower() if variant else None, onnx=Path(onnx) if onnx is not None else None,
                         engine=Path(engine) if engine is not None else None,
                         weights=Path(weights) if weights is not None else None)
    options = RunnerOptions(device=device, precision=precision, threads=threads, streams=streams, compile=compile,
                            cuda_graph=cuda_graph)
    return target_for(source, backend, options)


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
    from ...modelfile.profiles import format_shape

    facts = target.plan.source.describe()  # prepare says what the machine lacks first (ModelPlan.describe)
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
    ``OptionError`` (exit 2) for a run-time precision this CPU cannot run (``ModelPlan.check_machine``)."""
    target.plan.check_machine()


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


@contextmanager
def open_runners(target: BenchTarget) -> Iterator[list[Runner]]:
    """Active runner(s) for ``target``: one that takes ``streams`` queries at once where the runner is
    concurrent (OpenVINO), else ``streams`` runners (TensorRT: one execution context each)."""
    with ExitStack() as stack:
        runners = []
        first = open_runner(target.plan)
        if first.concurrent:
            # one runner taking ``streams`` queries at once (OpenVINO: NUM_STREAMS, one request each)
            runners = [stack.enter_context(first)] * target.streams
        else:
            runners.append(stack.enter_context(first))
            for _ in range(target.streams - 1):
                runners.append(stack.enter_context(open_runner(target.plan)))
        if not runners:
            raise DeployError("no runner opened")
        yield runners
