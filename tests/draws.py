"""Weight draws the INT8 gate is checked on (tests and ``benchmarks/``): precision figures from one kind
of weights say little about the checkpoints users bring.

- ``synthetic``: ``convmlp.weights.synthesize_weights``, the deterministic trained-looking weights every
  check uses when no checkpoint is given;
- ``default_init_bn``: the official code's own initialisation (``create_model``), with BatchNorm's
  affine parameters and running statistics drawn away from 1/0, as training leaves them;
- ``digits_images``: a real labelled image set (scikit-learn's handwritten digits, upscaled), which
  ``benchmarks/trained_accuracy.py`` trains ConvMLP on;
- ``with_outlier``: any of them with one activation channel made ``factor`` times larger in front of one
  MatMul, the function unchanged in FP32 (the LayerNorm's scale and shift for that channel are
  multiplied, the MatMul's weights for it divided). Per-tensor INT8 then spends its range on that
  channel: the outlier pattern that makes real checkpoints fail INT8 (LLM.int8(), SmoothQuant).
"""

from __future__ import annotations

import numpy as np
import torch

from convmlp import create_model
from convmlp.weights import synthesize_weights

__all__ = ["synthetic", "default_init_bn", "with_outlier", "digits_images"]


def synthetic(variant: str = "s", seed: int = 0, **kw) -> torch.nn.Module:
    return synthesize_weights(create_model(variant, **kw), seed).eval()


def default_init_bn(variant: str = "s", seed: int = 0, **kw) -> torch.nn.Module:
    """The official initialisation (trunc-normal Linear, Kaiming Conv, LayerNorm 1/0), BatchNorm perturbed."""
    torch.manual_seed(seed)
    model = create_model(variant, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(torch.exp(0.5 * torch.randn(n, generator=g)))
    return model.eval()


def with_outlier(model: torch.nn.Module, block: str = "stages.0.blocks.0", factor: float = 64.0,
                 channel: int = 0) -> torch.nn.Module:
    """``model`` (changed in place) with channel ``channel`` of ``block``'s ``norm1`` output ``factor`` times
    larger and ``channel_mlp1.fc1``'s weights for it ``factor`` times smaller: the same function in FP32."""
    b = model.get_submodule(block)
    with torch.no_grad():
        b.norm1.weight[channel] *= factor
        b.norm1.bias[channel] *= factor
        b.channel_mlp1.fc1.weight[:, channel] /= factor
    return model


def digits_images(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits (8x8, 0..16) as (N, size, size, 3) uint8 RGB images, white
    strokes on black, upscaled with bilinear interpolation; and their labels 0..9."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0 * 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
    return np.repeat(big[..., None], 3, axis=-1), data.target.astype(np.int64)
