"""Will a request fit in memory? Estimated before anything is allocated, so that a huge resolution is
one clear line (CLI exit 2) instead of an allocator's traceback halfway through the work."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from .errors import OptionError

__all__ = ["TooLarge", "available_bytes", "estimate_bytes", "check_fits", "gib"]

#: live tensors at the peak of a forward pass, in units of the largest one: the block's input,
#: its hidden activation and the residual (PyTorch, onnxruntime and TensorRT all keep about this)
LIVE_TENSORS = 3
FLOAT_BYTES = 4


class TooLarge(OptionError):
    """A request that cannot fit in this machine's memory (CLI exit 2)."""


def gib(n: float) -> str:
    """``1.9e12`` -> ``1,770 GiB``; ``3e6`` -> ``2.86 MiB``."""
    if n >= 100 * 2**30:
        return f"{n / 2**30:,.0f} GiB"
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def available_bytes(device: str = "cpu") -> int | None:
    """Memory available now: ``MemAvailable`` of /proc/meminfo (CPU) or free CUDA memory; None if unknown."""
    if device == "cuda":
        try:
            import torch

            free, _total = torch.cuda.mem_get_info()
            return int(free)
        except Exception:
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@lru_cache(maxsize=16)
def _largest_per_pixel(variant: str, features: bool) -> float:
    """Largest activation of one image, in elements per input pixel (shape-only run at 224)."""
    from convmlp import create_model
    from convmlp.profile import largest_activation

    model = create_model(variant, features_only=features).to("meta")
    return largest_activation(model, 224, 224) / (224 * 224)


def estimate_bytes(variant: str | None, batch: int, height: int, width: int, *, features: bool = False) -> int:
    """Bytes one FP32 inference of ``batch x 3 x height x width`` needs at its peak: the input plus
    ``LIVE_TENSORS`` of the largest activation (input only when the variant is unknown)."""
    pixels = batch * height * width
    total = pixels * 3 * FLOAT_BYTES
    if variant is not None:
        total += int(LIVE_TENSORS * _largest_per_pixel(variant, features) * pixels * FLOAT_BYTES)
    return total


def check_fits(
    variant: str | None, cases: Sequence[tuple[int, int, int]], *, device: str = "cpu", features: bool = False,
    available: int | None = None,
) -> None:
    """Raise ``TooLarge`` naming the first ``(batch, height, width)`` whose estimate exceeds what is available."""
    free = available if available is not None else available_bytes(device)
    if free is None:
        return
    for batch, height, width in cases:
        need = estimate_bytes(variant, batch, height, width, features=features)
        if need > free:
            inp = batch * 3 * height * width * FLOAT_BYTES
            what = f"~{gib(need)} (input alone {gib(inp)})" if variant else f"~{gib(need)} of input alone"
            where = "free GPU memory" if device == "cuda" else "memory available"
            raise TooLarge(f"{height}x{width} at batch {batch} needs {what}; this machine has {gib(free)} {where}")
