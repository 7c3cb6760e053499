"""Model builder and the public variant functions (official API: ``convmlp_s/m/l``)."""

from __future__ import annotations

import os
from typing import Any

from .model import ARCHS, ConvMLP
from .weights import load_checkpoint, load_pretrained

__all__ = ["VARIANTS", "create_model", "convmlp_s", "convmlp_m", "convmlp_l"]

VARIANTS: tuple[str, ...] = tuple(ARCHS)


def _check_variant(variant: str) -> str:
    v = variant.lower().removeprefix("convmlp_").removeprefix("convmlp-")
    if v not in ARCHS:
        raise ValueError(f"unknown ConvMLP variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    return v


def create_model(
    variant: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int = 1000,
    features_only: bool = False,
    classifier_head: bool = True,
    progress: bool = True,
    **kwargs: Any,
) -> ConvMLP:
    """Build ConvMLP-``variant`` (s, m or l), optionally with weights.

    ``weights`` loads a local checkpoint (strict; raises ``CheckpointError``),
    ``pretrained`` fetches the official one through the torch.hub cache. The
    model's sha256 of the loaded file is kept as ``model.checkpoint_sha256``.
    Extra keyword arguments (``drop_path_rate``) go to ``ConvMLP``.
    """
    v = _check_variant(variant)
    if pretrained and weights is not None:
        raise ValueError("give either pretrained=True or weights=PATH, not both")
    arch = ARCHS[v]
    model = ConvMLP(
        blocks=arch.blocks,
        dims=arch.dims,
        mlp_ratios=arch.mlp_ratios,
        channels=arch.channels,
        n_conv_blocks=arch.n_conv_blocks,
        classifier_head=classifier_head,
        num_classes=num_classes,
        features_only=features_only,
        **kwargs,
    )
    model.variant = v
    model.checkpoint_sha256 = None
    if weights is not None:
        model.checkpoint_sha256 = load_checkpoint(model, weights)
    elif pretrained:
        model.checkpoint_sha256 = load_pretrained(model, v, progress=progress)
    return model


def convmlp_s(
    pretrained: bool = False,
    progress: bool = True,
    num_classes: int = 1000,
    classifier_head: bool = True,
    **kwargs: Any,
) -> ConvMLP:
    """ConvMLP-S: 9.0M params, 2.4 GMACs, 76.8% ImageNet-1k top-1."""
    return create_model(
        "s", pretrained=pretrained, progress=progress, num_classes=num_classes,
        classifier_head=classifier_head, **kwargs,
    )


def convmlp_m(
    pretrained: bool = False,
    progress: bool = True,
    num_classes: int = 1000,
    classifier_head: bool = True,
    **kwargs: Any,
) -> ConvMLP:
    """ConvMLP-M: 17.4M params, 3.9 GMACs, 79.0% ImageNet-1k top-1."""
    return create_model(
        "m", pretrained=pretrained, progress=progress, num_classes=num_classes,
        classifier_head=classifier_head, **kwargs,
    )


def convmlp_l(
    pretrained: bool = False,
    progress: bool = True,
    num_classes: int = 1000,
    classifier_head: bool = True,
    **kwargs: Any,
) -> ConvMLP:
    """ConvMLP-L: 42.7M params, 9.9 GMACs, 80.2% ImageNet-1k top-1."""
    return create_model(
        "l", pretrained=pretrained, progress=progress, num_classes=num_classes,
        classifier_head=classifier_head, **kwargs,
    )
