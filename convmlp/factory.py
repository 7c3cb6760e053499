"""Model builder and the public variant functions (official API: ``convmlp_s/m/l``)."""

from __future__ import annotations

import os
from typing import Any

from .model import ARCHS, ConvMLP
from .weights import (
    PRETRAINED_CFGS,
    CheckpointError,
    file_sha256,
    head_classes,
    load_pretrained,
    load_state,
    read_checkpoint,
    synthesize_weights,
)

__all__ = ["VARIANTS", "create_model", "synthetic_label", "convmlp_s", "convmlp_m", "convmlp_l"]

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
    num_classes: int | None = None,
    features_only: bool = False,
    classifier_head: bool = True,
    progress: bool = True,
    synthetic_seed: int | None = None,
    **kwargs: Any,
) -> ConvMLP:
    """Build ConvMLP-``variant`` (s, m or l), optionally with weights.

    - ``weights``: a local checkpoint, loaded strictly (``CheckpointError`` names the first
      mismatch). The head's size comes from the checkpoint's ``head.weight`` when ``num_classes``
      is None; a different ``num_classes`` is a ``CheckpointError``.
    - ``pretrained``: the official ImageNet-1k checkpoint through the torch.hub cache; with another
      ``num_classes`` the head is left at its init (fine-tuning).
    - ``synthetic_seed``: deterministic trained-looking weights (``synthesize_weights``) instead,
      the weights ``export`` and ``validate`` use when no checkpoint is given.

    ``num_classes`` defaults to 1000. ``model.checkpoint_sha256`` is the sha256 of the file loaded
    (None otherwise) and ``model.weights_source`` says where the weights came from. Extra keyword
    arguments (``drop_path_rate``) go to ``ConvMLP``.
    """
    v = _check_variant(variant)
    if sum((pretrained, weights is not None, synthetic_seed is not None)) > 1:
        raise ValueError("give at most one of pretrained=True, weights=PATH or synthetic_seed=N")
    state = read_checkpoint(weights) if weights is not None else None
    head = head_classes(state) if state is not None and not features_only and classifier_head else None
    if head is not None and num_classes is not None and num_classes != head:
        raise CheckpointError(
            f"{weights}: its head has {head} classes, not the {num_classes} asked for "
            "(leave num_classes out to take the checkpoint's)"
        )
    arch = ARCHS[v]
    model = ConvMLP(
        blocks=arch.blocks,
        dims=arch.dims,
        mlp_ratios=arch.mlp_ratios,
        channels=arch.channels,
        n_conv_blocks=arch.n_conv_blocks,
        classifier_head=classifier_head,
        num_classes=num_classes or head or 1000,
        features_only=features_only,
        **kwargs,
    )
    model.variant = v
    model.checkpoint_sha256 = None
    model.weights_source = "init"
    if state is not None:
        load_state(model, state, str(weights))
        model.checkpoint_sha256 = file_sha256(weights)  # type: ignore[arg-type]
        model.weights_source = str(weights)
    elif pretrained:
        model.checkpoint_sha256 = load_pretrained(model, v, progress=progress)
        model.weights_source = PRETRAINED_CFGS[v].url
    elif synthetic_seed is not None:
        synthesize_weights(model, synthetic_seed)
        model.weights_source = synthetic_label(synthetic_seed)
    return model


def synthetic_label(seed: int) -> str:
    """How reports name synthetic weights: ``synthetic(seed=0)``."""
    return f"synthetic(seed={seed})"


# The public variants (the official API): each holds only its name and numbers; the caller's keyword
# arguments win (``num_classes`` left out takes a checkpoint's head, else 1000), as in ``create_model``.


def convmlp_s(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> ConvMLP:
    """ConvMLP-S: 9.0M params, 2.4 GMACs, 76.8% ImageNet-1k top-1."""
    return create_model("s", pretrained=pretrained, progress=progress, **kwargs)


def convmlp_m(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> ConvMLP:
    """ConvMLP-M: 17.4M params, 3.9 GMACs, 79.0% ImageNet-1k top-1."""
    return create_model("m", pretrained=pretrained, progress=progress, **kwargs)


def convmlp_l(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> ConvMLP:
    """ConvMLP-L: 42.7M params, 9.9 GMACs, 80.2% ImageNet-1k top-1."""
    return create_model("l", pretrained=pretrained, progress=progress, **kwargs)
