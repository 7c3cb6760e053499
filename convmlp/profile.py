"""Parameter and GMAC counts at any resolution.

Counting convention (the paper's, and fvcore's/ptflops'): one multiply-accumulate
of a convolution or a linear layer is one MAC; normalisation, activations,
pooling and residual additions are not counted. The counter is PyTorch's own
``torch.utils.flop_counter.FlopCounterMode``, which reports FLOPs = 2 x MACs for
these ops, so MACs = FLOPs / 2.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .factory import create_model

__all__ = ["ModelProfile", "count_params", "count_macs", "largest_activation", "profile_variant"]


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


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.zeros(())).device


def count_macs(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """MACs of one forward pass of ``model`` on a ``batch x 3 x height x width`` input.

    A model on the ``meta`` device is counted without any arithmetic or memory, at any size.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch, 3, height, width, device=_device(model)))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def largest_activation(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """Elements of the largest tensor any submodule outputs on a ``batch x 3 x height x width`` input
    (run on the ``meta`` device: nothing is allocated)."""
    meta = model if _device(model).type == "meta" else copy.deepcopy(model).to("meta")
    largest = [batch * 3 * height * width]

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    handles = [m.register_forward_hook(hook) for m in meta.modules()]
    try:
        with torch.no_grad():
            meta.eval()(torch.zeros(batch, 3, height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return largest[0]


def profile_variant(
    variant: str, resolutions: list[tuple[int, int]], *, features_only: bool = False
) -> list[ModelProfile]:
    """Profile one variant (classifier with 1000 classes unless ``features_only``)."""
    model = create_model(variant, features_only=features_only)
    params = count_params(model)
    meta = model.to("meta")  # counting needs shapes only: any resolution, no memory
    return [
        ModelProfile(model.variant, (h, w), params, count_macs(meta, h, w))
        for h, w in resolutions
    ]
