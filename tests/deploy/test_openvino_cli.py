"""OpenVINO through the commands: validate (with its precision's gate), predict, benchmark; the BF16 gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import cli
from deploy.compare import (
    BF16_TOLERANCE,
    CaseResult,
    OutputMetrics,
    ValidationReport,
    compare_outputs,
    tolerance_for,
)

pytest.importorskip("openvino")
from deploy.runners import openvino as ov_runner  # noqa: E402


@pytest.fixture(scope="module")
def graph(s_graph_pair) -> Path:
    return s_graph_pair["fp32"]


def test_gate_follows_the_least_exact_precision():
    assert tolerance_for("fp32", "bf16") is BF16_TOLERANCE
    assert tolerance_for("fp16", None).precision == "fp16" and tolerance_for("fp32", "fp32").precision == "fp32"
    assert tolerance_for("fp16", "bf16").precision == "bf16"


def test_bf16_gate_cosine_and_run_level_top1():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 1000)).astype(np.float32) * 3
    ok = ref + 0.01 * rng.standard_normal(ref.shape).astype(np.float32)
    assert compare_outputs((4, 3, 224, 224), {"logits": ref}, {"logits": ok}, BF16_TOLERANCE).passed
    noisy = ref + 0.15 * rng.standard_normal(ref.shape).astype(np.float32) * np.abs(ref).mean()
    res = compare_outputs((4, 3, 224, 224), {"logits": ref}, {"logits": noisy}, BF16_TOLERANCE)
    assert not res.passed and any("cosine" in f for f in res.failures)

    def case(batch: int, top1: float, photos: bool = True) -> CaseResult:
        return CaseResult((batch, 3, 64, 64), [OutputMetrics("logits", 0, 0, 0.01, 0.9999, top1=top1, top5=1.0)],
                          photos=photos)

    one_flip = ValidationReport("ov", "m", "w", BF16_TOLERANCE, [case(1, 1.0), case(3, 2 / 3), case(1, 1.0)])
    assert one_flip.passed and one_flip.top1_agreement == pytest.approx(0.8)
    many = ValidationReport("ov", "m", "w", BF16_TOLERANCE, [case(3, 1 / 3), case(1, 1.0)])
    assert not many.passed and many.failures == ["top-1 agrees on 50% of the real photos < 75%"]
    grid_only = ValidationReport("ov", "m", "w", BF16_TOLERANCE, [case(3, 1 / 3, photos=False)])
    assert grid_only.passed and grid_only.top1_agreement is None  # near-tie synthetic logits are not gated


def test_validate_on_openvino_uses_the_precision_it_ran(graph):
    caps = ov_runner.cpu_capabilities()
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(graph), "--backend", "openvino", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    ran = "bf16" if "BF16" in caps else "fp32"
    assert data["backend"] == f"openvino[CPU,{ran}]" and data["tolerance"]["precision"] == ran
    rel = max(c["outputs"][0]["rel_l2"] for c in data["cases"])
    assert (1e-4 < rel < 0.03) if ran == "bf16" else rel < 1e-4
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(graph), "--backend", "openvino",
                                        "--precision", "f32", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["tolerance"]["precision"] == "fp32"


def test_validate_catches_a_damaged_graph_on_openvino(graph, tmp_path):
    proto = onnx.load(str(graph))
    from onnx import numpy_helper

    for init in proto.graph.initializer:  # damage one fc1 weight of the first Conv-MLP block
        if init.name.startswith("val_") and len(init.dims) == 2 and init.dims[0] == 128:
            arr = numpy_helper.to_array(init) * -3.0
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
            break
    bad = tmp_path / "convmlp_s.onnx"
    onnx.save(proto, str(bad))
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(bad), "--backend", "openvino"])
    assert res.exit_code == 3 and "FAILED" in res.output


def test_validate_option_mistakes(graph):
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(graph), "--precision", "bf16"])
    assert res.exit_code == 2 and "--precision applies to --backend openvino" in res.output
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(graph), "--backend", "openvino", "--provider", "cpu"])
    assert res.exit_code == 2 and "onnxruntime option" in res.output


def test_predict_on_openvino_agrees_with_onnxruntime(graph, tmp_path):
    from PIL import Image

    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(1).random((120, 160, 3)) * 255).astype(np.uint8)).save(img)
    out = {}
    for args in (["--backend", "openvino", "--precision", "f32"], []):
        res = CliRunner().invoke(cli.main, ["predict", str(img), "--onnx", str(graph), "--json", *args])
        assert res.exit_code == 0, res.output
        data = json.loads(res.output[res.output.index("{"):])
        out[data["model"]["backend"]] = [s["index"] for s in data["results"][0]["top_k"]]
    assert out["openvino"] == out["onnxruntime"]


def test_benchmark_on_openvino(graph, monkeypatch):
    res = CliRunner().invoke(cli.main, ["benchmark", "--onnx", str(graph), "--backend", "openvino", "--precision",
                                        "f32", "-b", "1", "-r", "64", "--iterations", "2", "--warmup-ms", "0",
                                        "--json", "-"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)["results"][0]
    assert row["runner"] == "openvino[CPU,fp32]" and row["precision"] == "fp32" and row["queries"] == 2
    monkeypatch.setattr(ov_runner, "cpu_capabilities", lambda: ["FP32"])
    res = CliRunner().invoke(cli.main, ["benchmark", "--onnx", str(graph), "--backend", "openvino",
                                        "--precision", "bf16", "--iterations", "1"])
    assert res.exit_code == 2 and "no native BF16" in res.output and "Traceback" not in res.output
