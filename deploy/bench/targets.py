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

from ..errors import BackendUnavailable, DeployError
from ..runners.base import Runner
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

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")


class BenchUsageError(ValueError):
    """A benchmark request that contradicts itself or its model file (CLI exit 2)."""


@dataclass(frozen=True)
class BenchTarget:
    """One backend with everything needed to open its runner(s)."""

    backend: str
    device: str
    precision: str | None = None  # torch: fp32/fp16; files: what they were built with (None = unknown yet)
    variant: str | None = None
    weights: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    compile: bool = False
    cuda_graph: bool = False
    streams: int = 1
    threads: int | None = None

    @property
    def model_path(self) -> Path | None:
        return self.onnx or self.engine

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
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
    """Infer the backend (--onnx: onnxruntime, --engine: tensorrt, --variant alone: torch) and check
    that the options agree; raises ``BenchUsageError``. Reads no file and imports no runtime."""
    if onnx is not None and engine is not None:
        raise BenchUsageError("give either --onnx or --engine, not both")
    implied = "onnxruntime" if onnx is not None else "tensorrt" if engine is not None else None
    if backend is None:
        backend = implied or ("torch" if variant is not None else None)
        if backend is None:
            raise BenchUsageError("nothing to benchmark: give --variant (PyTorch), --onnx PATH or --engine PATH")
    if backend not in BACKENDS:
        raise BenchUsageError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if implied is not None and backend != implied:
        given = "--onnx" if onnx is not None else "--engine"
        raise BenchUsageError(f"--backend {backend} contradicts {given} (which is run with {implied})")
    if backend == "torch" and variant is None:
        raise BenchUsageError("--backend torch needs --variant")
    if backend == "onnxruntime" and onnx is None:
        raise BenchUsageError("--backend onnxruntime needs --onnx PATH")
    if backend == "tensorrt" and engine is None:
        raise BenchUsageError("--backend tensorrt needs --engine PATH (build one with 'convmlp-deploy build')")
    if weights is not None and backend != "torch":
        raise BenchUsageError("--weights applies to --backend torch; an ONNX file or engine carries its weights")
    if compile and backend != "torch":
        raise BenchUsageError("--compile applies to --backend torch only")
    if cuda_graph and backend != "tensorrt":
        raise BenchUsageError("--cuda-graph applies to --backend tensorrt only (for PyTorch try --compile)")
    if streams < 1:
        raise BenchUsageError(f"--streams must be >= 1, got {streams}")
    if streams > 1 and backend != "tensorrt":
        raise BenchUsageError("--streams > 1 applies to --backend tensorrt only (one execution context per stream)")

    if backend == "tensorrt":
        if device not in (None, "cuda"):
            raise BenchUsageError("TensorRT engines run on --device cuda only")
        device = "cuda"
    device = device or "cpu"
    if device not in ("cpu", "cuda"):
        raise BenchUsageError(f"unknown device {device!r}: choose cpu or cuda")

    if backend == "torch":
        precision = precision or "fp32"
        if precision not in ("fp32", "fp16"):
            raise BenchUsageError(f"unknown precision {precision!r}: choose fp32 or fp16")
        if precision == "fp16" and device == "cpu":
            raise BenchUsageError("--precision fp16 with PyTorch needs --device cuda (CPU kernels are FP32)")
    elif precision is not None:
        raise BenchUsageError(
            f"--precision applies to --backend torch; the {'ONNX file' if onnx else 'engine'} "
            "has its precision built in"
        )
    if threads is not None and threads < 1:
        raise BenchUsageError(f"--threads must be >= 1, got {threads}")
    return BenchTarget(
        backend=backend,
        device=device,
        precision=precision,
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
    if target.onnx is not None:
        from ..trt.onnx_info import inspect_onnx

        info = inspect_onnx(target.onnx)
        variant = _agreeing_variant(target.variant, info.variant, "ONNX metadata")
        return replace(target, variant=variant, precision=info.precision)
    if target.engine is not None:
        from ..trt.manifest import max_batch, read_manifest
        from ..trt.profiles import format_shape

        manifest = read_manifest(target.engine)
        limit = max_batch(manifest)
        for case in cases:
            if case.batch > limit:
                raise BenchUsageError(
                    f"batch {case.batch} is beyond the engine's largest batch {limit} "
                    f"(profiles min:opt:max {_describe_profiles(manifest.profiles)})"
                )
            if not any(p.covers(case.shape) for p in manifest.profiles):
                raise BenchUsageError(
                    f"input {format_shape(case.shape)} is outside every profile of {target.engine.name} "
                    f"(min:opt:max {_describe_profiles(manifest.profiles)})"
                )
        variant = _agreeing_variant(target.variant, manifest.variant, "engine manifest")
        return replace(target, variant=variant, precision=manifest.precision)
    return target


def _agreeing_variant(given: str | None, recorded: str | None, source: str) -> str | None:
    """``given`` (for GMACs) unless the file records another variant; the file's otherwise."""
    from convmlp import VARIANTS

    known = (recorded or "").lower().removeprefix("convmlp_").removeprefix("convmlp-")
    known_variant = known if known in VARIANTS else None
    if given and known_variant and given != known_variant:
        raise BenchUsageError(f"--variant {given} contradicts the {source}, which says variant {known_variant}")
    return given or known_variant


def check_environment(target: BenchTarget) -> None:
    """Raise ``BackendUnavailable`` (exit 1) when this machine lacks what ``target`` needs."""
    if target.backend == "tensorrt":
        from ..trt.version import import_tensorrt

        import_tensorrt()
    if target.backend == "onnxruntime":
        from ..runners.onnxrt import available_providers

        have = available_providers()
        if not have:
            raise BackendUnavailable("onnxruntime is not installed: pip install 'convmlp-deploy[cpu]' (or [gpu])")
        if target.device == "cuda" and "CUDAExecutionProvider" not in have:
            raise BackendUnavailable(
                f"--device cuda: this onnxruntime has no CUDAExecutionProvider (available: {', '.join(have)}); "
                "install onnxruntime-gpu"
            )
    if target.device == "cuda" or target.backend == "tensorrt":
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("--device cuda: no CUDA device is visible to PyTorch here")


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


def _torch_runner(target: BenchTarget) -> Runner:
    from ..runners.torch_runner import TorchRunner
    from ..validate import reference_model

    if target.variant is None:
        raise BenchUsageError("--backend torch needs --variant")
    model = reference_model(target.variant, target.weights)
    return TorchRunner(model, device=target.device, precision=target.precision or "fp32", compile=target.compile)


def _make_runner(target: BenchTarget) -> Runner:
    if target.backend == "torch":
        return _torch_runner(target)
    if target.backend == "onnxruntime":
        from ..runners.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(target.onnx or "", providers=[target.device], threads=target.threads)
    from ..runners.tensorrt import TensorRTRunner  # needs TensorRT: imported only here

    return TensorRTRunner(target.engine or "", cuda_graph=target.cuda_graph)


@contextmanager
def open_runners(target: BenchTarget) -> Iterator[list[Runner]]:
    """Active runner(s) for ``target``: ``streams`` of them for TensorRT, else one.

    For PyTorch on CPU, ``threads`` sets ``torch.set_num_threads`` for the duration.
    """
    import torch

    old_threads = torch.get_num_threads()
    with ExitStack() as stack:
        if target.backend == "torch" and target.threads:
            torch.set_num_threads(target.threads)
            stack.callback(torch.set_num_threads, old_threads)
        runners = []
        for _ in range(target.streams):
            runner = _make_runner(target)
            runners.append(stack.enter_context(runner))
        if not runners:
            raise DeployError("no runner opened")
        yield runners
