from __future__ import annotations

import pytest
import torch

import convmlp
from convmlp import ARCHS, create_model

from ..conftest import trained_like
from . import reference_impl

SHAPES = [(1, 224, 224), (2, 97, 131), (1, 32, 32), (2, 64, 200), (1, 160, 96)]


def assert_float32_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal up to float32 rounding accumulated through the network, relative to the tensor's scale."""
    scale = ref.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_every_variant_runs_at_odd_and_non_square_sizes(variant):
    model = trained_like(variant)
    for b, h, w in SHAPES[1:4]:
        with torch.no_grad():
            y = model(torch.randn(b, 3, h, w))
        assert y.shape == (b, 1000)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_matches_independent_reimplementation(variant):
    model = trained_like(variant, seed=3)
    sd = model.state_dict()
    for b, h, w in [(2, 97, 131), (1, 64, 64)]:
        x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ours, ref = model(x), reference_impl.forward(sd, x)
        assert_float32_close(ours, ref)


def test_features_match_independent_reimplementation():
    clf = trained_like("s", seed=5)
    feats = create_model("s", features_only=True).eval()
    feats.load_state_dict({k: v for k, v in clf.state_dict().items() if not k.startswith(("norm.", "head."))})
    x = torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        ours = feats(x)
        ref = reference_impl.forward(clf.state_dict(), x, features=True)
    assert len(ours) == 4
    for a, b in zip(ours, ref, strict=True):
        assert_float32_close(a, b)


def test_official_state_dict_keys():
    keys = set(create_model("s").state_dict())
    expected_some = {
        "tokenizer.block.0.weight", "tokenizer.block.1.running_var", "tokenizer.block.3.weight",
        "tokenizer.block.6.weight", "tokenizer.block.7.bias",
        "conv_stages.conv_blocks.0.0.weight", "conv_stages.conv_blocks.1.3.weight",
        "conv_stages.conv_blocks.1.7.running_mean", "conv_stages.downsample.weight", "conv_stages.downsample.bias",
        "stages.0.blocks.0.norm1.weight", "stages.0.blocks.0.channel_mlp1.fc1.weight",
        "stages.0.blocks.0.channel_mlp1.fc2.bias", "stages.0.blocks.1.connect.weight",
        "stages.0.blocks.1.connect_norm.bias", "stages.1.blocks.3.channel_mlp2.fc1.weight",
        "stages.0.downsample_mlp.downsample.weight", "stages.1.downsample_mlp.downsample.bias",
        "norm.weight", "norm.bias", "head.weight", "head.bias",
    }
    assert expected_some <= keys
    # bias-free convs, no stage-2 downsample, no third conv block in S
    assert not {"tokenizer.block.0.bias", "stages.0.blocks.0.connect.bias",
                "conv_stages.conv_blocks.0.0.bias", "conv_stages.conv_blocks.2.0.weight"} & keys
    assert not any(k.startswith("stages.2.downsample_mlp") for k in keys)
    assert not any(k.startswith("stages.3") for k in keys)


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_architecture_numbers(variant):
    arch = ARCHS[variant]
    model = create_model(variant)
    sd = model.state_dict()
    assert len(model.stages) == 3
    assert [len(s.blocks) for s in model.stages] == list(arch.blocks)
    assert len(model.conv_stages.conv_blocks) == arch.n_conv_blocks
    assert sd["tokenizer.block.6.weight"].shape[0] == arch.channels
    for i, (dim, ratio) in enumerate(zip(arch.dims, arch.mlp_ratios, strict=True)):
        assert sd[f"stages.{i}.blocks.0.channel_mlp1.fc1.weight"].shape == (int(dim * ratio), dim)
        assert sd[f"stages.{i}.blocks.0.connect.weight"].shape == (dim, 1, 3, 3)
    assert sd["head.weight"].shape == (1000, arch.dims[-1])


def test_stochastic_depth_schedule_and_eval_identity():
    model = create_model("m")
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.stages[1].blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 6).tolist())
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("variant", ["s", "l"])
def test_feature_pyramid_shapes_strides_and_info(variant):
    model = create_model(variant, features_only=True).eval()
    info = model.feature_info
    assert [f.reduction for f in info] == [4, 8, 16, 32]
    arch = ARCHS[variant]
    assert [f.num_chs for f in info] == [arch.channels, *arch.dims]
    for h, w in [(224, 224), (97, 131)]:
        with torch.no_grad():
            outs = model(torch.randn(2, 3, h, w))
        for f, o in zip(info, outs, strict=True):
            size = (h, w)
            for _ in range({4: 2, 8: 3, 16: 4, 32: 5}[f.reduction]):
                size = tuple((s + 1) // 2 for s in size)  # each stride-2 op with padding 1 rounds up
            assert o.shape == (2, f.num_chs, *size)


def test_features_state_dict_is_classifier_minus_head():
    clf = set(create_model("s").state_dict())
    feats = set(create_model("s", features_only=True).state_dict())
    assert feats == {k for k in clf if not k.startswith(("norm.", "head."))}


def test_headless_trunk_returns_nhwc_like_official():
    model = convmlp.convmlp_s(classifier_head=False).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 96))
    assert y.shape == (1, 2, 3, 512)
    assert model.head is None and model.norm is None


def test_public_api_and_num_classes():
    model = convmlp.convmlp_l(num_classes=10)
    assert model.head.out_features == 10
    with pytest.raises(ValueError, match="s, m, l"):
        create_model("xl")
    assert create_model("ConvMLP_S").variant == "s"
