"""Parameter and GMAC counts at any resolution.

Counting convention (the paper's, and fvcore's/ptflops'): one multiply-accumulate
of a convolution or a linear layer is one MAC; normalisation, activations,
pooling and residual additions are not counted. The counter is PyTorch's own
``torch.utils.flop_counter.FlopCounterMode``, which reports FLOPs = 2 x MACs for
these ops, so MACs = FLOPs / 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .factory import create_model

__all__ = ["ModelProfile", "count_params", "count_macs", "profile_variant"]


@dataclass(frozen=True)
class ModelProfile:
    """Size and cost of one variant at one input resolution (batch 1)."""

    variant: str
    resolution: tuple[int, int]
    params: int
    macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        d["gmacs"] = round(self.gmacs, 4)
        d["mparams"] = round(self.params / 1e6, 3)
        return d


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """MACs of one forward pass of ``model`` on a ``batch x 3 x height x width`` input."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch, 3, height, width))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile_variant(
    variant: str, resolutions: list[tuple[int, int]], *, features_only: bool = False
) -> list[ModelProfile]:
    """Profile one variant (classifier with 1000 classes unless ``features_only``)."""
    model = create_model(variant, features_only=features_only)
    params = count_params(model)
    return [
        ModelProfile(model.variant, (h, w), params, count_macs(model, h, w))
        for h, w in resolutions
    ]
