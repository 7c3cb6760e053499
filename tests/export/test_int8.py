"""The INT8 Q/DQ graph: TensorRT's explicit-quantization rules read off the graph, its gate, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

import cli
from deploy.commands.validate import validate_onnx
from export.int8 import calibration_set
from export.onnx import get_metadata
from tests.photos import CALIBRATION_PHOTOS, make_photo_set

F16, F32, I8 = TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.INT8


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """``export -v s --int8 --calibration DIR`` as a user runs it, on real photographs (40 images, 32 calibrate)."""
    root = tmp_path_factory.mktemp("int8")
    photos = make_photo_set(root / "photos" / "sub", 40, sources=CALIBRATION_PHOTOS, seed=0, size=(160, 160))
    (root / "photos" / "notes.txt").write_text("not an image")
    out = root / "art"
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--int8", "--calibration", str(photos[0].parent.parent),
                                        "--calibration-count", "32", "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (root / "export.out").write_text(res.output)
    return out


def test_held_out_images_are_not_called_photos(exported):
    """The calibration folder's held-out images may be anything (digit drawings): called what they are."""
    text = (exported.parent / "export.out").read_text()
    assert "top-1 agreement >= 60% on held-out images" in text and "top-1 agreement on the held-out images:" in text
    assert "real photo" not in text and "photograph" not in text


def test_failures_name_held_out_images():
    from deploy.compare import INT8_TOLERANCE, CaseResult, OutputMetrics, ValidationReport

    metrics = OutputMetrics("logits", max_abs=1.0, mean_abs=0.1, rel_l2=0.5, cosine_min=0.9, top1=0.25, top5=0.5)
    case = CaseResult((4, 3, 224, 224), [metrics], ["logits: relative error 0.5 > 0.1"], photos=True)
    report = ValidationReport("onnxruntime", "m", "w", INT8_TOLERANCE, [case], images="held-out images")
    assert report.failures == ["4x3x224x224 held-out images: logits: relative error 0.5 > 0.1",
                               "top-1 agrees on 25% of the held-out images < 60%"]
    assert INT8_TOLERANCE.describe(report.images_name).endswith("on held-out images")
    plain = ValidationReport("onnxruntime", "m", "w", INT8_TOLERANCE, [case])  # validate --images: its wording
    assert plain.failures[-1] == "top-1 agrees on 25% of the real photos < 60%" and plain.rows()[0]["case"].endswith(
        " photos")


def _graph(exported: Path) -> onnx.ModelProto:
    return onnx.load(str(exported / "convmlp_s.int8.onnx"))


def test_written_validated_and_described(exported):
    report = json.loads((exported / "convmlp_s.report.json").read_text())
    g = report["graphs"]["int8"]
    assert g["precision"] == "int8" and g["validation"]["passed"]
    shapes = [c["shape"] for c in g["validation"]["cases"]]
    assert [8, 3, 224, 224] in shapes  # the 8 images calibration did not use, as a validation case
    cal = report["int8"]["calibration"]
    assert cal["images"] == 32 and cal["found"] == 40 and cal["held_out"] == 8 and cal["method"] == "minmax"
    meta = get_metadata(_graph(exported))
    assert meta["precision"] == "int8" and meta["calibration_images"] == "32"
    assert meta["calibration_method"] == "minmax" and meta["calibration_files_sha256"] == cal["files_sha256"]
    assert meta["quantizer"].startswith("onnxruntime.quantization")
    graph_opset = next(o.version for o in _graph(exported).opset_import if o.domain in ("", "ai.onnx"))
    assert meta["opset"] == str(graph_opset) == str(report["int8"]["opset"])  # what the graph imports
    # the synthetic weights pass as plain INT8: the fallback (on by default) moved nothing back to float
    assert report["int8"]["fallback_mode"] == "auto" and report["int8"]["fallback"] is None
    assert "int8_fallback" not in meta


def test_obeys_tensorrt_explicit_quantization_rules(exported):
    proto = _graph(exported)
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 19  # float16 Q/DQ scales

    # float32 graph I/O
    assert [i.type.tensor_type.elem_type for i in graph.input] == [F32]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [F32]

    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        scale = inits[n.input[1]]
        assert scale.data_type == F16  # DQ hands FP16 to its consumer
        zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else None
        assert zp is not None and zp.data_type == I8 and not numpy_helper.to_array(zp).any()  # symmetric

    def dequantized(name: str) -> onnx.NodeProto | None:
        node = producer.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    weighted = [n for n in graph.node if n.op_type in ("Conv", "MatMul")]
    assert len(weighted) == 52
    for n in weighted:
        act, w = dequantized(n.input[0]), dequantized(n.input[1])
        assert act is not None and w is not None, n.name  # Q/DQ on both inputs
        assert inits[act.input[1]].dims in ([], [1])  # per-tensor activation scale
        weight = inits[w.input[0]]
        assert weight.data_type == I8
        axis = next((a.i for a in w.attribute if a.name == "axis"), 1)
        out_axis = 0 if n.op_type == "Conv" else 1  # Conv [O, I, kh, kw]; MatMul [K, N]
        assert axis == out_axis and list(inits[w.input[1]].dims) == [weight.dims[out_axis]], n.name
        if len(n.input) > 2:  # Conv bias stays floating point
            assert inits[n.input[2]].data_type == F16 and dequantized(n.input[2]) is None
    # no quantized output: nothing quantizes a Conv/MatMul output
    outs = {o for n in weighted for o in n.output}
    assert not [n for n in qdq if n.op_type == "QuantizeLinear" and n.input[0] in outs]
    # not quantized: LayerNorm, reductions, the head
    for n in graph.node:
        if n.op_type in ("LayerNormalization", "ReduceMean", "Gemm"):
            assert all(dequantized(i) is None for i in n.input if i), n.name
    assert not [i for i in inits.values() if i.data_type == TensorProto.INT32]  # no INT32 bias
    # strongly typed: no node mixes float16 and float32 inputs
    typed = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in list(typed.graph.value_info) + list(typed.graph.input)}
    types.update({i.name: i.data_type for i in graph.initializer})
    for n in typed.graph.node:
        if n.op_type in ("Cast", "QuantizeLinear", "DequantizeLinear", "Shape", "Reshape", "Concat", "Squeeze"):
            continue
        floats = {types.get(i) for i in n.input if i and types.get(i) in (F16, F32)}
        assert len(floats) <= 1, (n.name, floats)


def test_gate_passes_the_sound_graph_and_fails_a_broken_scale(exported, tmp_path):
    report = validate_onnx(exported / "convmlp_s.int8.onnx")
    assert report.passed and report.tolerance.precision == "int8"
    proto = _graph(exported)
    inits = {i.name: i for i in proto.graph.initializer}
    q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"][20]  # a mid-network activation
    scale = inits[q.input[1]]
    scale.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(scale) * 0.05).astype(np.float16), scale.name))
    broken = tmp_path / "convmlp_s.int8.onnx"
    onnx.save(proto, str(broken))
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(broken)])
    assert res.exit_code == 3 and "gate (int8)" in res.output and "FAILED" in res.output


def test_runs_on_openvino(exported):
    pytest.importorskip("openvino")
    report = validate_onnx(exported / "convmlp_s.int8.onnx", backend="openvino", precision="f32")
    assert report.tolerance.precision == "int8" and report.passed, report.failures


def test_build_plan_accepts_int8(exported):
    from deploy.modelfile import describe as inspect_onnx
    from deploy.trt.builder import BuildOptions, plan_build

    info = inspect_onnx(exported / "convmlp_s.int8.onnx")
    assert info.precision == "int8"
    for major in (10, 11):
        plan = plan_build(BuildOptions(), graph_precision="int8", tensorrt_major=major)
        assert plan.precision == "int8" and "FP16" not in plan.set_flags and "TF32" not in plan.clear_flags


def test_calibration_pick_is_reproducible_and_checked(tmp_path):
    make_photo_set(tmp_path / "a", 12, sources=CALIBRATION_PHOTOS[:2], size=(64, 64))
    one, two = calibration_set(tmp_path, 5, "entropy"), calibration_set(tmp_path, 5, "entropy")
    assert one.files == two.files and one.sha256 == two.sha256 and len(one.held_out) == 7
    assert not set(one.files) & set(one.held_out)
    assert calibration_set(tmp_path, 5, "entropy", seed=1).sha256 != one.sha256


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--int8"], 2, "--int8 and --calibration DIR go together"),
        (["--calibration", "{empty}"], 2, "--int8 and --calibration DIR go together"),
        (["--int8", "--calibration", "{empty}"], 2, "no image files in it"),
        (["--int8", "--calibration", "{empty}", "--calibration-method", "kl"], 2, "'kl' is not one of"),
    ],
)
def test_bad_calibration_options(tmp_path, args, code, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    out = tmp_path / "art"
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(out), *[a.format(empty=empty) for a in args]])
    assert res.exit_code == code and message in res.output and "Traceback" not in res.output
    assert not list(out.glob("*.onnx")) if out.exists() else True


def test_unreadable_calibration_images_are_skipped(tmp_path):
    make_photo_set(tmp_path / "photos", 6, sources=CALIBRATION_PHOTOS[:2], size=(64, 64))
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    from export.pipeline import ExportConfig, run_export

    result = run_export(ExportConfig("s", output_dir=tmp_path / "art", int8=True, calibration=tmp_path / "photos",
                                     calibration_count=7, shapes=((1, 3, 64, 64),), simplifier="none"))
    cal = result.report["int8"]["calibration"]
    # 6 readable of 7 found, no more than --calibration-count: a sixth is held out; counts are of readable images
    assert (cal["found"], cal["images"], cal["held_out"]) == (7, 5, 1)
    assert len(cal["skipped"]) == 1 and cal["skipped"][0].count("broken.jpg") == 1
    assert result.report["int8"]["calibration_batches"] == cal["images"]


def test_cpu_layout_is_fp32_u8s8_and_tensorrt_refuses_it(tmp_path):
    make_photo_set(tmp_path / "photos", 12, sources=CALIBRATION_PHOTOS, size=(96, 96))
    out = tmp_path / "art"
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--int8", "--int8-layout", "cpu", "--calibration",
                                        str(tmp_path / "photos"), "--calibration-count", "8", "-o", str(out)])
    assert res.exit_code == 0, res.output
    proto = onnx.load(str(out / "convmlp_s.int8.onnx"))
    inits = {i.name: i for i in proto.graph.initializer}
    assert get_metadata(proto)["int8_layout"] == "cpu"
    from export.int8 import vnni

    # without an INT8 dot-product unit, u8s8 kernels saturate: weights go to 7 bits (rel L2 0.10-0.12 -> 0.07-0.08)
    assert get_metadata(proto)["int8_weight_bits"] == ("8" if vnni() else "7")
    assert not [i for i in inits.values() if i.data_type == F16]  # FP32 around the INT8 layers
    q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert q and all(inits[n.input[2]].data_type == TensorProto.UINT8 for n in q)  # u8 activations
    producer = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert any(producer.get(n.input[2]) is not None for n in convs)  # INT32 biases, dequantized
    res = CliRunner().invoke(cli.main, ["build", "--onnx", str(out / "convmlp_s.int8.onnx")])
    assert res.exit_code == 1 and "TensorRT cannot build" in res.output and "--int8-layout tensorrt" in res.output


def test_numerics_are_checked_without_onnxruntimes_bias_rewrite(exported):
    """onnxruntime's WeightBiasQuantization turns the TensorRT layout's float biases into INT32 with an FP16
    scale product that can underflow; TensorRT never does. Checks run without it, timing keeps the defaults."""
    import onnxruntime as ort

    from deploy.backends import RunnerOptions, backend
    from deploy.commands.bench import resolve_target
    from deploy.reference import sample_images
    from deploy.runners.onnxrt import NUMERICS_PASSES

    graph = exported / "convmlp_s.int8.onnx"
    x = sample_images((2, 3, 224, 224), 0)

    def plain(disabled: list[str]) -> np.ndarray:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        return sess.run(None, {"input": x})[0]

    with backend("onnxruntime").open(graph, RunnerOptions()) as checked:
        exact = checked.infer(x)["logits"]
    timing = resolve_target(onnx=graph).plan.options  # what the benchmark opens with
    assert timing.exact is False
    with backend("onnxruntime").open(graph, timing) as timed:
        fast = timed.infer(x)["logits"]
    assert np.array_equal(exact, plain(list(NUMERICS_PASSES)))
    assert np.array_equal(fast, plain([]))
    assert not np.array_equal(exact, fast)  # the rewrite does change this graph's numbers
