"""TensorRT basics for build and run time: which TensorRT (if any) is installed, what this machine's GPU
is, whether an engine runs on them, and a logger that keeps TensorRT's messages.

TensorRT is imported lazily: nothing here fails on a machine without it until a
function that needs it is called, and then with one line that says how to get it.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, DeployError
from ..modelfile.engine import EngineManifest

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "INSTALL_HINT",
    "import_tensorrt",
    "tensorrt_version",
    "parse_version",
    "trt_major",
    "cuda_device",
    "check_compatible",
    "Messages",
    "make_logger",
]

INSTALL_HINT = (
    "TensorRT is not installed: on a machine with an NVIDIA GPU run "
    "pip install 'convmlp-deploy[trt]', or use the Docker image (docs/tensorrt.md)"
)

#: The oldest TensorRT this code is written against (name-based I/O, execute_async_v3).
MIN_MAJOR = 10


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or ``BackendUnavailable`` with the install hint.

    A ``tensorrt`` folder holding only type stubs (``tensorrt-stubs``) or a
    placeholder wheel imports as an empty namespace package; that counts as absent.
    """
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(INSTALL_HINT) from None
    except Exception as exc:  # a broken install (missing libnvinfer...) raises OSError & co
        raise BackendUnavailable(f"TensorRT failed to import ({exc}); {INSTALL_HINT}") from None
    if not _is_real(tensorrt):
        raise BackendUnavailable(INSTALL_HINT)
    major = trt_major(str(tensorrt.__version__))
    if major < MIN_MAJOR:
        raise BackendUnavailable(
            f"TensorRT {tensorrt.__version__} is too old: convmlp-deploy needs TensorRT {MIN_MAJOR}.x or 11.x"
        )
    return tensorrt


def _is_real(module: ModuleType) -> bool:
    return getattr(module, "__file__", None) is not None and hasattr(module, "Builder")


def tensorrt_version() -> str | None:
    """The installed TensorRT version string, or None where it cannot be imported."""
    try:
        return str(import_tensorrt().__version__)
    except BackendUnavailable:
        return None


def parse_version(version: str) -> tuple[int, ...]:
    """``"10.13.0.35"`` -> ``(10, 13, 0, 35)``; trailing non-numeric parts are dropped."""
    parts: list[int] = []
    for piece in version.strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    if not parts:
        raise ValueError(f"not a version: {version!r}")
    return tuple(parts)


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string."""
    return parse_version(version)[0]


def cuda_device(index: int | None = None) -> tuple[str, str, str]:
    """(GPU name, compute capability ``"9.0"``, CUDA version) of the current device, via PyTorch."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device: TensorRT engines need an NVIDIA GPU and a CUDA build of PyTorch")
    dev = torch.cuda.current_device() if index is None else index
    major, minor = torch.cuda.get_device_capability(dev)
    return torch.cuda.get_device_name(dev), f"{major}.{minor}", str(torch.version.cuda or "unknown")


#: (built major, running major) pairs TensorRT documents for version-compatible engines
_CROSS_MAJOR_OK = {(8, 9), (8, 10), (10, 11)}


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise DeployError(f"not a compute capability: {text!r}") from None


def check_compatible(
    manifest: EngineManifest, *, gpu_name: str, compute_capability: str, tensorrt_version: str
) -> None:
    """DeployError unless an engine described by ``manifest`` can run on this GPU and TensorRT."""
    rebuild = "rebuild the engine here with 'convmlp-deploy build'"
    built_cc, here_cc = _cc(manifest.compute_capability), _cc(compute_capability)
    level = manifest.hardware_compatibility
    if level == "ampere+":
        if here_cc < (8, 0):
            raise DeployError(
                f"engine was built hardware-compatible for Ampere and newer (compute capability >= 8.0), "
                f"but this GPU ({gpu_name}) has compute capability {compute_capability}; {rebuild}"
            )
    elif level == "same-cc":
        if here_cc != built_cc:
            raise DeployError(
                f"engine was built for compute capability {manifest.compute_capability} "
                f"(hardware-compatible within it), but this GPU ({gpu_name}) has {compute_capability}; {rebuild}"
            )
    elif level is not None:
        raise DeployError(f"engine manifest has an unknown hardware_compatibility {level!r}")
    elif (manifest.gpu_name, built_cc) != (gpu_name, here_cc):
        raise DeployError(
            f"engine was built for {manifest.gpu_name} (compute capability {manifest.compute_capability}) "
            f"but this GPU is {gpu_name} ({compute_capability}); TensorRT engines are not portable across "
            f"GPU models: {rebuild}, or build with --hardware-compat ampere+"
        )

    built_v, here_v = parse_version(manifest.tensorrt_version), parse_version(tensorrt_version)
    if manifest.version_compatible:
        same_major = built_v[0] == here_v[0]
        if here_v < built_v or not (same_major or (built_v[0], here_v[0]) in _CROSS_MAJOR_OK):
            raise DeployError(
                f"engine was built version-compatible with TensorRT {manifest.tensorrt_version}; it runs on that "
                f"version or a later one of the same major version (or 10 -> 11), not on TensorRT "
                f"{tensorrt_version}; {rebuild}"
            )
    elif built_v[:3] != here_v[:3]:
        raise DeployError(
            f"engine was built with TensorRT {manifest.tensorrt_version} but TensorRT {tensorrt_version} is "
            f"installed; plans only load in the TensorRT version that built them: {rebuild}, "
            "or build with --version-compatible"
        )


class Messages:
    """Collects TensorRT's warnings and errors so that failures can quote them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, severity: str, msg: str) -> None:
        self.lines.append(f"[{severity}] {msg}")

    def errors(self) -> list[str]:
        return [m for m in self.lines if m.startswith(("[ERROR]", "[INTERNAL_ERROR]"))] or self.lines


def make_logger(messages: Messages) -> trt.ILogger:
    """A TensorRT logger that keeps warnings and errors in ``messages`` (TensorRT's own prints too much)."""
    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                messages.add(severity.name, msg)

    return _Logger()
