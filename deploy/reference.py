"""The references every check compares against: inputs on a grid of shapes (image-like noise, or a
batch of the user's images) with PyTorch FP32's outputs for them, and the loop that runs a runner on
them and compares (``deploy.compare``). ``validate``, ``export``'s gates and the INT8 fallback use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .compare import Tolerance, ValidationReport, compare_outputs, gate_plan
from .errors import DeployError
from .runners.base import Runner
from .runners.torch_runner import TorchRunner

__all__ = [
    "Shape",
    "DEFAULT_GRID",
    "grid_for",
    "sample_images",
    "ReferenceCase",
    "reference_cases",
    "photo_cases",
    "compare_runner",
    "validate_runner",
]

Shape = tuple[int, int, int, int]

#: batch 1 and 3; 224x224; non-square; sides not divisible by 32; 512x512
DEFAULT_GRID: tuple[Shape, ...] = (
    (1, 3, 224, 224),
    (3, 3, 224, 224),
    (1, 3, 192, 320),
    (3, 3, 97, 131),
    (1, 3, 512, 512),
)

def grid_for(input_size: Sequence[int] | None) -> tuple[Shape, ...]:
    """The validation grid around a network's recorded input size ``[3, H, W]`` (or ``(H, W)``): batch 1
    and 3 at that size, a non-square size, odd sides not divisible by 32 and a large one. A 224x224
    network gets ``DEFAULT_GRID``; every side stays >= 32 and the large one at most 512."""
    if input_size is None:
        return DEFAULT_GRID
    h, w = (int(v) for v in tuple(input_size)[-2:])
    if (h, w) == (224, 224):
        return DEFAULT_GRID

    def side(v: float) -> int:
        return max(32, min(512, round(v)))

    odd_h, odd_w = side(h * 1.5) | 1, side(w * 2) | 1
    odd_h, odd_w = odd_h + 2 * (odd_h % 32 == 0), odd_w + 2 * (odd_w % 32 == 0)
    grid = ((1, 3, h, w), (3, 3, h, w), (1, 3, side(h * 6 / 7), side(w * 10 / 7)), (3, 3, odd_h, odd_w),
            (1, 3, side(h * 16 / 7), side(w * 16 / 7)))
    return tuple(dict.fromkeys(grid))


def sample_images(shape: Shape, seed: int) -> np.ndarray:
    """Image-like inputs: smooth per-sample structure plus fine noise, in normalised units."""
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(b, c, max(2, h // 32), max(2, w // 32), generator=gen) * 1.5
    x = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    x = x + 0.3 * torch.randn(b, c, h, w, generator=gen)
    return x.numpy().astype(np.float32)


@dataclass(frozen=True)
class ReferenceCase:
    """One validation input and the PyTorch FP32 outputs for it."""

    shape: Shape
    inputs: np.ndarray
    outputs: dict[str, np.ndarray]
    photos: bool = False  # real photographs rather than the synthetic grid
    native: bool = False  # photographs at their own size (no resize, no crop), beside the recorded-size case


def reference_cases(
    model: torch.nn.Module,
    shapes: Sequence[Shape] = DEFAULT_GRID,
    *,
    output_names: list[str] | None = None,
    seed: int = 0,
) -> list[ReferenceCase]:
    """Inputs and PyTorch FP32 outputs on each shape, computed once for all backends."""
    cases = []
    with TorchRunner(model, output_names=output_names) as ref:
        for i, shape in enumerate(shapes):
            x = sample_images(shape, seed + i)
            cases.append(ReferenceCase(shape, x, ref.infer(x)))
    return cases


#: held-out images are also checked at the size they come in: at most this many distinct sizes (the most
#: common first), each side at most ``NATIVE_MAX_SIDE`` (a larger photograph would cost more than the grid)
NATIVE_SIZES = 4
NATIVE_MAX_SIDE = 512


def photo_cases(
    model: torch.nn.Module,
    images: Sequence[str | os.PathLike[str]],
    cfg: Any,
    *,
    output_names: list[str] | None = None,
    what: str = "the held-out images",
    native: bool = True,
) -> list[ReferenceCase]:
    """The validation cases real images make, with PyTorch FP32's outputs: first every image preprocessed by
    ``cfg`` (the model's recorded preprocessing) into one batch at the recorded input size; then, with
    ``native``, the images at the sizes they come in (normalised by ``cfg``, neither resized nor cropped),
    one case per size. An image already at the recorded size, under 32 px or over ``NATIVE_MAX_SIDE`` has
    no own-size case, nor has any size past the ``NATIVE_SIZES`` most common. Unreadable images are left
    out; ``DeployError`` if none is readable."""
    from convmlp.preprocess import ImageError, load_image, preprocess

    recorded: list[np.ndarray] = []
    own: dict[tuple[int, ...], list[np.ndarray]] = {}
    for path in images:
        try:
            img = load_image(path)
            recorded.append(preprocess(img, cfg))
            x = preprocess(img, cfg, resolution="native") if native else None
        except ImageError:
            continue
        if x is not None and x.shape[2:] != recorded[-1].shape[2:] and max(x.shape[2:]) <= NATIVE_MAX_SIDE:
            own.setdefault(x.shape[2:], []).append(x)
    if not recorded:
        raise DeployError(f"none of {what} could be read")
    batches = [np.concatenate(recorded)]
    batches += [np.concatenate(b) for b in sorted(own.values(), key=len, reverse=True)[:NATIVE_SIZES]]
    with TorchRunner(model, output_names=output_names) as ref:
        return [ReferenceCase(tuple(x.shape), x, ref.infer(x), photos=True, native=n > 0)  # type: ignore[arg-type]
                for n, x in enumerate(batches)]


def compare_runner(
    runner: Runner,
    cases: Sequence[ReferenceCase],
    *,
    tolerance: Tolerance,
    model_label: str,
    weights: str,
    on_case: Callable[[Shape], None] | None = None,
    images: str | None = None,
) -> ValidationReport:
    """Run ``runner`` (already entered) on each reference case and compare, under ``deploy.compare.gate_plan``:
    with enough image cases (``images`` names them) an input-dependent gate is held on them and the grid
    checks shapes and finite outputs; otherwise every case is held to ``tolerance``."""
    held = sum(c.shape[0] for c in cases if c.photos and not c.native)
    plan = gate_plan(tolerance, held, images or "real photos")
    results = []
    for case in cases:
        if on_case:
            on_case(case.shape)
        tol = plan.tolerance if case.photos else plan.grid
        results.append(compare_outputs(case.shape, case.outputs, runner.infer(case.inputs), tol, photos=case.photos,
                                       native=case.native))
    return ValidationReport(runner.name, model_label, weights, tolerance, results, images=images,
                            grid_tolerance=plan.grid)


def validate_runner(
    runner: Runner,
    model: torch.nn.Module,
    *,
    shapes: Sequence[Shape] = DEFAULT_GRID,
    tolerance: Tolerance,
    model_label: str,
    weights: str,
    seed: int = 0,
    on_case: Callable[[Shape], None] | None = None,
) -> ValidationReport:
    """Run ``runner`` (already entered) and PyTorch FP32 on each shape; compare."""
    cases = reference_cases(model, shapes, output_names=runner.output_names, seed=seed)
    return compare_runner(
        runner, cases, tolerance=tolerance, model_label=model_label, weights=weights, on_case=on_case
    )
