from __future__ import annotations

import pytest
import torch

import convmlp
from convmlp import PRETRAINED_CFGS, CheckpointError, create_model
from convmlp.weights import file_sha256

from ..conftest import trained_like


@pytest.mark.parametrize("wrap,prefix", [(None, ""), ("state_dict", ""), ("model", ""), (None, "module."),
                                         ("state_dict", "module.")])
def test_loads_official_layouts_unchanged(make_checkpoint, wrap, prefix):
    path = make_checkpoint("s", wrap=wrap, prefix=prefix, seed=7)
    model = create_model("s", weights=path).eval()
    expected = trained_like("s", seed=7)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), expected(x))
    assert model.checkpoint_sha256 == file_sha256(path)


def test_features_backbone_loads_classifier_checkpoint(make_checkpoint):
    path = make_checkpoint("m", seed=2)
    feats = create_model("m", weights=path, features_only=True)
    ref = trained_like("m", seed=2)
    assert torch.equal(feats.state_dict()["stages.2.blocks.0.norm1.weight"],
                       ref.state_dict()["stages.2.blocks.0.norm1.weight"])


def test_other_variant_names_first_shape_mismatch(make_checkpoint):
    path = make_checkpoint("s")
    with pytest.raises(CheckpointError, match=r"shape mismatch at tokenizer\.block\.0\.weight"):
        create_model("l", weights=path)


def test_head_size_comes_from_the_checkpoint(make_checkpoint):
    path = make_checkpoint("s", num_classes=10)
    assert create_model("s", weights=path).head.out_features == 10  # a fine-tuned head needs no flag
    assert create_model("s", weights=path, num_classes=10).head.out_features == 10
    with pytest.raises(CheckpointError, match="its head has 10 classes, not the 1000 asked for"):
        create_model("s", weights=path, num_classes=1000)


def test_variant_functions_let_the_caller_win(make_checkpoint):
    """``convmlp_s(weights=<10-class checkpoint>)`` loads it (the variant pins no head size), and an
    explicit ``num_classes`` the checkpoint contradicts is refused naming both."""
    path = make_checkpoint("s", num_classes=10, seed=3)
    model = convmlp.convmlp_s(weights=path).eval()
    assert model.num_classes == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), create_model("s", weights=path).eval()(x))
    assert convmlp.convmlp_m().num_classes == 1000 and convmlp.convmlp_l(num_classes=7).num_classes == 7
    with pytest.raises(CheckpointError, match="10 classes, not the 1000"):
        convmlp.convmlp_s(weights=path, num_classes=1000)


def test_other_model_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this model: .*missing keys"):
        create_model("s", weights=path)


def test_s_checkpoint_into_m_reports_missing_blocks(make_checkpoint):
    path = make_checkpoint("s")
    with pytest.raises(CheckpointError, match="shape mismatch|missing keys"):
        create_model("m", weights=path)


def test_truncated_and_garbage_files(make_checkpoint, tmp_path):
    good = make_checkpoint("s")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.pth"
    junk.write_text("hello, not a checkpoint")
    for bad in (cut, junk):
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as info:
            create_model("s", weights=bad)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not found"):
        create_model("s", weights=tmp_path / "missing.pth")


def test_non_tensor_mapping_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        create_model("s", weights=path)


def test_pretrained_goes_through_torch_hub(monkeypatch, tmp_path, make_checkpoint):
    path = make_checkpoint("s", wrap=None, seed=4)
    seen = {}

    def fake_hub(url, **kw):
        seen["url"] = url
        return torch.load(path, map_location="cpu", weights_only=True)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "convmlp_s_imagenet.pth").write_bytes(path.read_bytes())
    model = convmlp.convmlp_s(pretrained=True).eval()
    assert seen["url"] == PRETRAINED_CFGS["s"].url
    assert torch.equal(model.head.weight, trained_like("s", seed=4).head.weight)
    # fine-tuning: another class count keeps the trunk and re-initialises the head
    ft = convmlp.convmlp_s(pretrained=True, num_classes=10)
    assert ft.head.out_features == 10
    assert torch.equal(ft.norm.weight, trained_like("s", seed=4).norm.weight)


def test_pretrained_offline_is_one_clear_error(monkeypatch):
    def offline(url, **kw):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="could not fetch ConvMLP-L weights .*--weights"):
        create_model("l", pretrained=True)


def test_weights_config_is_data():
    for v, cfg in PRETRAINED_CFGS.items():
        assert cfg.url.endswith(f"convmlp_{v}_imagenet.pth")
        assert cfg.input_size == (3, 224, 224) and cfg.num_classes == 1000
        assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
        assert 0.8 <= cfg.crop_pct <= 1.0
