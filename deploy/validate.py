"""Validate any runner against PyTorch FP32 on a grid of input shapes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from convmlp import create_model
from convmlp.model import ConvMLP
from convmlp.weights import synthesize_weights

from .compare import Tolerance, ValidationReport, compare_outputs
from .runners.base import Runner
from .runners.torch_runner import TorchRunner

__all__ = [
    "Shape",
    "DEFAULT_GRID",
    "SYNTHETIC_SEED",
    "reference_model",
    "weights_label",
    "sample_images",
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

SYNTHETIC_SEED = 0


@dataclass(frozen=True)
class _Weights:
    path: str | None
    seed: int


def reference_model(
    variant: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    features: bool = False,
    num_classes: int = 1000,
    seed: int = SYNTHETIC_SEED,
) -> ConvMLP:
    """The PyTorch FP32 model a graph is exported from and checked against.

    With ``weights`` it is that checkpoint; without, deterministic trained-looking
    weights from ``seed`` (see ``synthesize_weights``), so that ``export`` and a
    later ``validate`` without weights compare the same model.
    """
    if weights is not None:
        model = create_model(variant, weights=weights, num_classes=num_classes, features_only=features)
    else:
        model = create_model(variant, num_classes=num_classes, features_only=features)
        synthesize_weights(model, seed)
        model.checkpoint_sha256 = None
    return model.eval()


def weights_label(weights: str | os.PathLike[str] | None, seed: int = SYNTHETIC_SEED) -> str:
    return str(weights) if weights is not None else f"synthetic(seed={seed})"


def sample_images(shape: Shape, seed: int) -> np.ndarray:
    """Image-like inputs: smooth per-sample structure plus fine noise, in normalised units."""
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(b, c, max(2, h // 32), max(2, w // 32), generator=gen) * 1.5
    x = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    x = x + 0.3 * torch.randn(b, c, h, w, generator=gen)
    return x.numpy().astype(np.float32)


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
    cases = []
    with TorchRunner(model, output_names=runner.output_names) as ref:
        for i, shape in enumerate(shapes):
            if on_case:
                on_case(shape)
            x = sample_images(shape, seed + i)
            cases.append(compare_outputs(shape, ref.infer(x), runner.infer(x), tolerance))
    return ValidationReport(runner.name, model_label, weights, tolerance, cases)
