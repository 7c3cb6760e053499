"""When the INT8 gate fails: the rejected graph is kept and its first bad layer named; ``--int8-fallback auto``
moves the costliest layers back to float until the gate passes (export.fallback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import cli
from deploy.compare import Tolerance, ValidationReport
from export.fallback import logits_error, quantized_layers, revert, search
from export.fp16 import to_fp16
from export.int8 import quantize_int8
from export.onnx import get_metadata
from tests.draws import synthetic, with_outlier
from tests.photos import CALIBRATION_PHOTOS, make_photo_set

OUTLIER_LAYER = "stages.0.blocks.0.channel_mlp1.fc1/MatMul"


# --------------------------------------------------------------------------- a tiny Q/DQ graph


def _tiny_float(seed: int = 0) -> onnx.ModelProto:
    """input [N,3,H,W] -> c1/Conv -> Relu -> c2/Conv -> GlobalAveragePool -> Flatten -> fc/MatMul -> logits."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b2"),
        numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32) * 0.3, "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["h1"], name="c1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"], name="r/Relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"], name="c2/Conv"),
        helper.make_node("GlobalAveragePool", ["h2"], ["p"], name="p/Pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="f/Flatten"),
        helper.make_node("MatMul", ["f", "w3"], ["logits"], name="fc/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def tiny() -> dict:
    f = _tiny_float()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    out = {"float": f, "x": x}
    for layout in ("tensorrt", "cpu"):
        out[layout] = quantize_int8(f, iter(list(x[:8, None])), layout=layout)[0]
    return out


@pytest.mark.parametrize("layout", ["tensorrt", "cpu"])
def test_quantized_layers_are_the_conv_and_matmul_nodes(tiny, layout):
    assert quantized_layers(tiny[layout]) == ["c1/Conv", "c2/Conv", "fc/MatMul"]
    assert quantized_layers(tiny["float"]) == []


def test_reverting_every_layer_of_the_tensorrt_layout_gives_the_fp16_graph(tiny):
    q, f, x = tiny["tensorrt"], tiny["float"], tiny["x"]
    back = revert(q, f, quantized_layers(q))
    ops = [n.op_type for n in back.graph.node]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops  # dead Q/DQ and INT8 weights dropped
    assert not any(i.data_type == TensorProto.INT8 for i in back.graph.initializer)
    onnx.checker.check_model(back, full_check=True)
    ref = _run(f, x)
    assert logits_error(_run(back, x), ref)[0] < 3e-3  # FP16 numerics: the weights came back from FP32
    assert np.allclose(_run(back, x), _run(to_fp16(f), x), rtol=0, atol=2e-3)
    assert logits_error(_run(q, x), ref)[0] > logits_error(_run(back, x), ref)[0]


def test_reverting_one_layer_touches_that_layer_only(tiny):
    q, f = tiny["tensorrt"], tiny["float"]
    one = revert(q, f, ["c2/Conv"])
    assert quantized_layers(one) == ["c1/Conv", "fc/MatMul"]
    producers = {o: n for n in one.graph.node for o in n.output}
    c2 = next(n for n in one.graph.node if n.name == "c2/Conv")
    assert producers[c2.input[0]].op_type == "Relu" or producers[c2.input[0]].op_type == "Cast"
    weight = next(i for i in one.graph.initializer if i.name == c2.input[1])
    assert weight.data_type == TensorProto.FLOAT16  # the TensorRT layout's float is FP16
    assert np.array_equal(numpy_helper.to_array(weight),
                          numpy_helper.to_array(next(i for i in f.graph.initializer if i.name == "w2")).astype(np.float16))
    with pytest.raises(Exception, match="no such quantized layer"):
        revert(q, f, ["nope/Conv"])


def test_the_cpu_layout_reverts_to_fp32_weights_and_bias(tiny):
    q, f = tiny["cpu"], tiny["float"]
    one = revert(q, f, ["c1/Conv"])
    producers = {o: n for n in one.graph.node for o in n.output}
    c1 = next(n for n in one.graph.node if n.name == "c1/Conv")
    assert c1.input[0] == "input"  # straight from the graph input, no Q/DQ
    for slot, name in ((1, "w1"), (2, "b1")):  # the INT32 bias of the CPU layout comes back as FP32 too
        assert c1.input[slot] not in producers
        init = next(i for i in one.graph.initializer if i.name == c1.input[slot])
        assert init.data_type == TensorProto.FLOAT
        assert np.array_equal(numpy_helper.to_array(init),
                              numpy_helper.to_array(next(i for i in f.graph.initializer if i.name == name)))
    onnx.checker.check_model(one, full_check=True)


def test_search_stops_at_its_limit_with_a_table_of_what_it_tried(tiny):
    q, f, x = tiny["tensorrt"], tiny["float"], tiny["x"]
    ref = _run(f, x)
    loose = Tolerance("int8", max_rel_l2=1.0, require_top1=False)  # every step is near enough to run the gate
    gates = []

    def never(candidate):
        gates.append(quantized_layers(candidate))
        return _failing(loose)

    result = search(q, f, x, ref, never, loose, ranked_on="16 test inputs", limit=2)
    assert not result.passed and result.layers == [] and result.limit == 2
    assert [s.layers for s in result.steps] == [1, 2] and all(s.gate.startswith("failed") for s in result.steps)
    assert len(gates) == 2 and len(gates[1]) == 1  # the second candidate has two of three layers in float
    assert [c.layer for c in result.ranking] == sorted([c.layer for c in result.ranking],
                                                       key=lambda n: -next(c.gain for c in result.ranking
                                                                           if c.layer == n))
    passing = search(q, f, x, ref, lambda c: _passing(loose), loose, ranked_on="16 test inputs")
    assert passing.passed and passing.layers == [passing.ranking[0].layer] and passing.limit == 1  # 3 // 4 -> 1


def _report(tol: Tolerance, failures: list[str]) -> ValidationReport:
    from deploy.compare import CaseResult, OutputMetrics

    case = CaseResult((1, 3, 16, 16), [OutputMetrics("logits", 0.0, 0.0, 0.0, 1.0)], failures)
    return ValidationReport("fake", "tiny", "w", tol, [case])


def _failing(tol: Tolerance) -> ValidationReport:
    return _report(tol, ["forced failure"])


def _passing(tol: Tolerance) -> ValidationReport:
    return _report(tol, [])


# --------------------------------------------------------------------------- ConvMLP-S with an outlier


def run(*args: object):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def outlier(tmp_path_factory) -> dict[str, Path]:
    """ConvMLP-S whose ``stages.0.blocks.0`` fc1 input has one channel 64x larger (``tests.draws.with_outlier``:
    the same function in FP32), and 24 real photographs to calibrate on (16 calibrate, 8 held out)."""
    root = tmp_path_factory.mktemp("outlier")
    ck = root / "outlier.pth"
    torch.save(with_outlier(synthetic("s")).state_dict(), ck)
    photos = make_photo_set(root / "photos", 24, sources=CALIBRATION_PHOTOS, seed=1, size=(160, 160))
    return {"checkpoint": ck, "photos": photos[0].parent, "out": root / "out"}


def _export(outlier, *extra: object):
    return run("export", "-v", "s", "--weights", outlier["checkpoint"], "--int8", "--calibration",
               outlier["photos"], "--calibration-count", "16", "-o", outlier["out"], *extra)


@pytest.fixture(scope="module")
def without_fallback(outlier):
    return _export(outlier, "--int8-fallback", "off")


def test_a_failed_gate_names_the_layer_and_keeps_the_rejected_graph(outlier, without_fallback):
    res, out = without_fallback, outlier["out"]
    assert res.exit_code == 3, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: validation failed for the int8 graph") and "Traceback" not in res.output
    assert f"first jumps at {OUTLIER_LAYER}" in line and "rejected/convmlp_s.int8.onnx" in line
    assert not (out / "convmlp_s.int8.onnx").exists() and not (out / "convmlp_s.onnx").exists()  # nothing final
    kept = out / "rejected" / "convmlp_s.int8.onnx"
    assert get_metadata(onnx.load(str(kept)))["precision"] == "int8"
    assert (out / "rejected" / "convmlp_s.onnx").is_file()  # its FP32 graph beside it, for --per-layer
    # the kept graph can be inspected as the message says: the same layer is found
    check = run("validate", "--onnx", kept, "--weights", outlier["checkpoint"], "--per-layer", "--json")
    assert check.exit_code == 3, check.output
    assert json.loads(check.stdout)["per_layer"]["first_jump"]["node"] == OUTLIER_LAYER


def test_the_fallback_finds_the_outlier_layer_and_passes(outlier, without_fallback):
    res = _export(outlier)  # --int8-fallback auto, the default
    out = outlier["out"]
    assert res.exit_code == 0, res.output
    assert not (out / "rejected").exists()  # the earlier run's rejected graph is removed
    report = json.loads((out / "convmlp_s.report.json").read_text())
    fb = report["int8"]["fallback"]
    assert fb["passed"] and fb["layers"][0] == OUTLIER_LAYER and len(fb["layers"]) <= fb["limit"] == 13
    assert fb["ranking"][0]["layer"] == OUTLIER_LAYER and fb["quantized_layers"] == 52
    assert fb["before"]["rel_l2"] > 0.1 > fb["after"]["rel_l2"]
    assert report["graphs"]["int8"]["validation"]["passed"]
    graph = onnx.load(str(out / "convmlp_s.int8.onnx"))
    assert OUTLIER_LAYER not in quantized_layers(graph) and len(quantized_layers(graph)) == 52 - len(fb["layers"])
    record = json.loads(get_metadata(graph)["int8_fallback"])
    assert record["layers"] == fb["layers"] and record["search_s"] > 0 and record["after"] == fb["after"]
    assert "int8 fallback: passes with" in res.output and OUTLIER_LAYER in res.output


def test_the_cpu_layout_falls_back_to_fp32(outlier, tmp_path):
    res = run("export", "-v", "s", "--weights", outlier["checkpoint"], "--int8", "--int8-layout", "cpu",
              "--calibration", outlier["photos"], "--calibration-count", "16", "-o", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    fb = json.loads(res.stdout)["int8"]["fallback"]
    assert fb is not None and fb["passed"] and OUTLIER_LAYER in fb["layers"]
    graph = onnx.load(str(tmp_path / "convmlp_s.int8.onnx"))
    node = next(n for n in graph.graph.node if n.name == OUTLIER_LAYER)
    weight = next(i for i in graph.graph.initializer if i.name == node.input[1])
    assert weight.data_type == TensorProto.FLOAT


def test_fallback_options_are_checked_before_work(outlier, tmp_path):
    res = _export({**outlier, "out": tmp_path / "o"}, "--int8-fallback", "sometimes")
    assert res.exit_code == 2 and "sometimes" in res.output
    res = _export({**outlier, "out": tmp_path / "o"}, "--int8-fallback-limit", "0")
    assert res.exit_code == 2 and not (tmp_path / "o").exists()
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(tmp_path / "p"), "--int8-fallback-limit", "3"])
    assert res.exit_code == 2 and "applies to --int8" in res.output and not (tmp_path / "p").exists()
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
