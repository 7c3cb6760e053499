from __future__ import annotations

import pytest

from convmlp import ARCHS, create_model
from convmlp.profile import count_macs, count_params, profile_variant

# The paper's table (ImageNet-1k, 224x224): params (M), GMACs
PAPER = {"s": (9.0, 2.4), "m": (17.4, 3.9), "l": (42.7, 9.9)}


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_reproduces_paper_table(variant):
    (p,) = profile_variant(variant, [(224, 224)])
    assert round(p.params / 1e6, 1) == PAPER[variant][0]
    assert round(p.gmacs, 1) == PAPER[variant][1]


def _out(n: int) -> int:  # conv/pool with k=3, s=2, p=1
    return (n + 1) // 2


def analytic_macs(variant: str, h: int, w: int, num_classes: int = 1000) -> int:
    """Conv + linear MACs counted by hand from the architecture numbers."""
    a = ARCHS[variant]
    c, half = a.channels, a.channels // 2
    h1, w1 = _out(h), _out(w)
    macs = h1 * w1 * (3 * half * 9 + half * half * 9 + half * c * 9)
    h2, w2 = _out(h1), _out(w1)
    d0 = a.dims[0]
    macs += a.n_conv_blocks * h2 * w2 * (c * d0 + d0 * d0 * 9 + d0 * c)
    h3, w3 = _out(h2), _out(w2)
    macs += h3 * w3 * c * d0 * 9
    for i, (n, dim, r) in enumerate(zip(a.blocks, a.dims, a.mlp_ratios, strict=True)):
        hid = int(dim * r)
        macs += n * h3 * w3 * (4 * dim * hid + dim * 9)
        if i < 2:
            h3, w3 = _out(h3), _out(w3)
            macs += h3 * w3 * dim * a.dims[i + 1] * 9
    return macs + a.dims[-1] * num_classes


@pytest.mark.parametrize("variant,h,w", [("s", 224, 224), ("m", 97, 131), ("l", 320, 640), ("s", 33, 32)])
def test_counter_agrees_with_hand_count(variant, h, w):
    assert count_macs(create_model(variant), h, w) == analytic_macs(variant, h, w)


def test_macs_scale_with_batch_and_params_are_counted():
    model = create_model("s")
    assert count_macs(model, 64, 64, batch=3) == 3 * count_macs(model, 64, 64)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    expected = sum(v.numel() for k, v in model.state_dict().items() if not k.endswith(buffers))
    assert count_params(model) == expected
