"""Which TensorRT (if any) is installed, and what this machine's GPU is.

TensorRT is imported lazily: nothing here fails on a machine without it until a
function that needs it is called, and then with one line that says how to get it.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from ..errors import BackendUnavailable

__all__ = [
    "INSTALL_HINT",
    "import_tensorrt",
    "tensorrt_version",
    "parse_version",
    "trt_major",
    "cuda_device",
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
