"""A fine-tuned model: its preprocessing recorded once (options or the checkpoint's ``pretrained_cfg``),
read back by every image path, and its reduced-precision gates carried by its own held-out images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import cli as tool
from deploy.compare import FP16_TOLERANCE, INT8_TOLERANCE, MIN_HELD_OUT_IMAGES, gate_plan
from deploy.reference import DEFAULT_GRID, grid_for
from tests.finetuned import SIZE, digits_cfg, save_checkpoint, train_digits, write_digits

#: a few seconds of training: enough for logits with margins, not for accuracy
STEPS = 30


def _cli(*args: object):
    return CliRunner().invoke(tool.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("digits")
    train, test = write_digits(root)
    cfg = digits_cfg(train)
    model, _ = train_digits(train, cfg, STEPS, batch=16)
    return {"root": root, "train": train, "test": test, "cfg": cfg, "model": model,
            "plain": save_checkpoint(model, root / "plain.pth"),
            "with_cfg": save_checkpoint(model, root / "with_cfg.pth", cfg)}


@pytest.fixture(scope="module")
def exported(digits) -> dict:
    """INT8 export with the preprocessing given as options (the checkpoint records none)."""
    cfg, out = digits["cfg"], digits["root"] / "out"
    res = _cli("export", "-v", "s", "--weights", digits["plain"], "--int8", "--calibration", digits["train"],
               "--calibration-count", 48, "--input-size", SIZE, "--mean", *cfg.mean, "--std", *cfg.std,
               "--crop-pct", 1.0, "--interpolation", "bilinear", "-o", out, "--json")
    assert res.exit_code == 0, res.output
    return {"out": out, "report": json.loads(res.stdout), "stderr": res.stderr}


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def test_int8_passes_on_held_out_images_and_records_32(exported, digits) -> None:
    report = exported["report"]
    int8 = report["graphs"]["int8"]["validation"]
    assert int8["passed"]
    assert int8["accuracy_gate_on"].startswith("held-out images (")
    held = [c for c in int8["cases"] if c["photos"]]
    assert held and held[0]["shape"][2:] == [SIZE, SIZE]
    assert int8["grid_tolerance"]["max_rel_l2"] is None  # the grid checks shapes and finite values only
    assert report["graphs"]["fp32"]["validation"]["accuracy_gate_on"] == "synthetic grid"
    assert [s[2:] for s in report["validation_shapes"]] == [list(s[2:]) for s in grid_for((3, SIZE, SIZE))]
    for name in ("convmlp_s.onnx", "convmlp_s.int8.onnx"):
        meta = _meta(exported["out"] / name)
        assert json.loads(meta["input_size"]) == [3, SIZE, SIZE]
        assert json.loads(meta["mean"]) == list(digits["cfg"].mean)
        assert json.loads(meta["std"]) == list(digits["cfg"].std)
        assert meta["crop_pct"] == "1.0" and meta["interpolation"] == "bilinear"


def test_load_classify_and_predict_resize_to_recorded_size(exported, digits) -> None:
    import deploy

    graph = exported["out"] / "convmlp_s.int8.onnx"
    image = next(digits["test"].rglob("*.png"))
    with deploy.load(graph) as model:
        x = model.preprocess(image)
        assert x.shape == (1, 3, SIZE, SIZE)
        top = model.classify([image], top_k=1)[0][0]
        assert top.index == int(np.argmax(model(x)[0]))
    res = _cli("predict", "--onnx", graph, image, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["model"]["input_size"] == [3, SIZE, SIZE]
    assert out["model"]["mean"] == list(digits["cfg"].mean)
    first = out["results"][0]
    assert first["input_shape"] == [1, 3, SIZE, SIZE]
    assert first["top_k"][0]["index"] == top.index


def test_checkpoint_pretrained_cfg_is_read_and_options_win(digits, tmp_path) -> None:
    from export.checks import preprocessing_cfg
    from export.config import ExportConfig

    lines: list[str] = []
    cfg = preprocessing_cfg(ExportConfig("s", weights=digits["with_cfg"]), lines.append)
    assert cfg.input_size == (3, SIZE, SIZE) and cfg.mean == digits["cfg"].mean and cfg.crop_pct == 1.0
    assert "pretrained_cfg" in lines[0]
    lines.clear()
    cfg = preprocessing_cfg(ExportConfig("s", weights=digits["with_cfg"], input_size=(48, 64)), lines.append)
    assert cfg.input_size == (3, 48, 64) and cfg.std == digits["cfg"].std
    assert "--input-size given on the command line wins" in lines[0]


@pytest.mark.parametrize(("args", "says"), [
    (("--std", 0.3, 0.0, 0.3), "std must be positive"),
    (("--std", 0.3, -1, 0.3), "std must be positive"),
    (("--crop-pct", 1.5), "crop_pct must be in (0, 1]"),
    (("--crop-pct", 0), "crop_pct must be in (0, 1]"),
    (("--input-size", 16), "under ConvMLP's 32 px"),
    (("--input-size", "32x"), "not N or HxW"),
])
def test_contradicting_preprocessing_is_exit_2_before_any_work(tmp_path, args, says) -> None:
    out = tmp_path / "never"
    res = _cli("export", "-v", "s", *args, "-o", out)
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_wrong_count_of_mean_values_is_exit_2(tmp_path) -> None:
    res = _cli("export", "-v", "s", "--mean", 0.5, 0.5, "-o", tmp_path / "never")
    assert res.exit_code == 2


def test_gate_plan_rule() -> None:
    few = gate_plan(INT8_TOLERANCE, MIN_HELD_OUT_IMAGES - 1, "held-out images")
    assert few.carried_by == "synthetic grid" and few.grid == INT8_TOLERANCE
    assert few.note and "fewer than 8" in few.note and "photo" not in few.note
    enough = gate_plan(INT8_TOLERANCE, MIN_HELD_OUT_IMAGES, "held-out images")
    assert enough.carried_by == "held-out images (8)" and enough.tolerance == INT8_TOLERANCE
    assert enough.grid.max_rel_l2 == float("inf") and enough.grid.min_cosine is None
    assert gate_plan(INT8_TOLERANCE, 0).note is None
    exact = gate_plan(FP16_TOLERANCE, 64, "held-out images")  # exactness gates stay on the grid
    assert exact.grid == FP16_TOLERANCE and exact.carried_by == "synthetic grid"


def test_grid_keeps_non_finite_outputs_a_failure() -> None:
    from deploy.compare import compare_outputs

    shapes_only = gate_plan(INT8_TOLERANCE, 8).grid
    ref = {"logits": np.ones((1, 10), np.float32)}
    bad = compare_outputs((1, 3, 32, 32), ref, {"logits": np.full((1, 10), np.nan, np.float32)}, shapes_only)
    assert not bad.passed and "non-finite" in bad.failures[0]
    wrong = compare_outputs((1, 3, 32, 32), ref, {"logits": np.ones((1, 9), np.float32)}, shapes_only)
    assert not wrong.passed
    assert compare_outputs((1, 3, 32, 32), ref, {"logits": -ref["logits"]}, shapes_only).passed


def test_grid_follows_input_size() -> None:
    assert grid_for((3, 224, 224)) == DEFAULT_GRID and grid_for(None) == DEFAULT_GRID
    grid = grid_for((3, 32, 32))
    assert grid[0] == (1, 3, 32, 32) and (3, 3, 32, 32) in grid
    assert all(min(s[2:]) >= 32 for s in grid) and max(max(s[2:]) for s in grid) < 224
    assert any(s[2] % 32 and s[3] % 32 and s[2] != s[3] for s in grid)  # odd, non-square sides


def test_benchmark_default_resolution_is_the_recorded_size(exported) -> None:
    from deploy.commands.bench import plan_benchmark
    from deploy.loader import ModelSource

    plan = plan_benchmark(ModelSource(onnx=exported["out"] / "convmlp_s.onnx"))
    assert [(c.height, c.width) for c in plan.cases] == [(SIZE, SIZE)]


def test_held_out_images_are_also_gated_at_their_own_sizes(exported, digits, tmp_path) -> None:
    from PIL import Image

    files = sorted(digits["test"].rglob("*.png"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, f in enumerate(files[:12]):  # 10 at 48x40 (H x W), 2 at 36x36; none at the recorded 32x32
        size = (40, 48) if i < 10 else (36, 36)
        Image.open(f).convert("RGB").resize(size, Image.BILINEAR).save(folder / f"{i:02d}.png")
    res = _cli("validate", "--onnx", exported["out"] / "convmlp_s.int8.onnx", "--weights", digits["plain"],
               "--images", folder, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    photos = [c for c in report["cases"] if c["photos"]]
    assert [(c["shape"], c["native"]) for c in photos] == [([12, 3, SIZE, SIZE], False), ([10, 3, 48, 40], True),
                                                           ([2, 3, 36, 36], True)]
    assert report["accuracy_gate_on"].endswith("(12)")  # each image counted once
    assert 0.6 <= report["native_top1_agreement"] <= 1.0


def test_own_size_agreement_is_a_gate_of_its_own() -> None:
    from deploy.compare import CaseResult, OutputMetrics, ValidationReport

    def case(n: int, top1: float, native: bool) -> CaseResult:
        return CaseResult((n, 3, 48, 40), [OutputMetrics("logits", 0.1, 0.01, 0.02, 0.999, top1)], photos=True,
                          native=native)

    def report(*cases: CaseResult) -> ValidationReport:
        return ValidationReport("ort", "m", "w", INT8_TOLERANCE, list(cases), images="held-out images")

    ok = report(case(8, 1.0, False), case(8, 0.5, True))  # 50% at their own size < 60%
    assert ok.top1_agreement == 1.0 and ok.native_top1_agreement == 0.5 and ok.image_count == 8
    assert ok.run_failures == ["top-1 agrees on 50% of the held-out images at their own size < 60%"]
    few = report(case(8, 1.0, False), case(2, 0.0, True))  # too few at their own size to carry a verdict
    assert few.run_failures == [] and few.passed
