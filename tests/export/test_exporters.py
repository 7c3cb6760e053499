"""The two torch exporters: option checks, failures, dim names, node names, the GELU rewrite."""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import cli
from convmlp.spec import io_spec
from deploy.loader import reference_model
from export import onnx as exp
from export.errors import ExportError, ExportOptionError
from export.pipeline import ExportConfig, run_export
from export.rewrite import canonical_gelu

SMALL_GRID = ((1, 3, 64, 64), (2, 3, 97, 131))


@pytest.fixture(scope="module")
def raw_dynamo() -> onnx.ModelProto:
    """ConvMLP-S as the dynamo exporter writes it, before the GELU rewrite."""
    return exp.export_onnx_proto(reference_model("s"), io_spec("s"), rewrite=False).proto


def _optimized_ops(proto: onnx.ModelProto, tmp_path: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs (after its fusions)."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return exp.op_counts(onnx.load(str(tmp_path / "optimized.onnx")))


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("exporter", "opset", "valid"), [("dynamo", 17, "18..23"), ("torchscript", 21, "17..20"), ("dynamo", 99, "18..23")]
)
def test_opset_outside_the_exporters_range_is_a_usage_error(tmp_path, exporter, opset, valid):
    out = tmp_path / "art"
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--exporter", exporter, "--opset", str(opset), "-o", str(out)])
    assert res.exit_code == 2
    assert f"opset {opset} is not available with --exporter {exporter}: use {valid}" in res.output
    assert not out.exists() or not any(out.iterdir())


def test_unknown_exporter_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--exporter", "jit", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "'jit' is not one of 'dynamo', 'torchscript'" in res.output


def test_resolve_opset_defaults_and_bounds():
    assert exp.resolve_opset("dynamo", None) == 18 and exp.resolve_opset("torchscript", None) == 17
    assert exp.resolve_opset("dynamo", 23) == 23
    with pytest.raises(ExportOptionError, match="use 17..20"):
        exp.resolve_opset("torchscript", 23)
    with pytest.raises(ExportOptionError, match="unknown exporter"):
        exp.resolve_opset("tf2onnx", None)


def test_missing_onnxscript_is_one_line_exit_1(tmp_path, monkeypatch):
    real = exp.importlib.util.find_spec
    monkeypatch.setattr(exp.importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(tmp_path / "art")])
    assert res.exit_code == 1
    assert res.output.strip() == "Error: the dynamo exporter needs onnxscript: pip install onnxscript"


def test_failure_inside_torch_names_exporter_and_first_error_line(tmp_path, monkeypatch):
    @functools.wraps(exp.torch.onnx.export)  # same signature, so the exporter counts as present
    def broken(*args, **kwargs):
        try:
            raise ValueError("Unsupported op aten::frobnicate\nlong details\nmore")
        except ValueError as inner:
            raise RuntimeError("Failed to export the model\n## Exception summary\n...") from inner

    monkeypatch.setattr(exp.torch.onnx, "export", broken)
    out = tmp_path / "art"
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip() == "Error: the dynamo exporter failed: ValueError: Unsupported op aten::frobnicate"
    assert not list(out.glob("*.onnx")) and not list(out.glob("*.json"))


# --------------------------------------------------------------------------- the graph


def test_dims_carry_the_spec_names_everywhere(raw_dynamo):
    assert exp.dynamic_dims(raw_dynamo) == {"input": ["batch", 3, "height", "width"], "logits": ["batch", 1000]}
    symbols = {d.dim_param for vi in raw_dynamo.graph.value_info for d in vi.type.tensor_type.shape.dim if d.dim_param}
    assert symbols and not any(re.search(r"\bs\d+\b", s) for s in symbols), symbols  # no torch symbol left
    assert "batch" in symbols


def test_features_dims_and_values(tmp_path):
    graph = exp.export_onnx_proto(reference_model("s", features=True), io_spec("s", features=True))
    dims = exp.dynamic_dims(graph.proto)
    assert dims["f1"] == ["batch", 64, "f1_height", "f1_width"]
    assert dims["f4"] == ["batch", 512, "f4_height", "f4_width"]
    sess = ort.InferenceSession(graph.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": np.zeros((2, 3, 97, 131), np.float32)})
    assert [o.shape for o in outs] == [(2, 64, 25, 33), (2, 128, 13, 17), (2, 256, 7, 9), (2, 512, 4, 5)]


def test_nodes_are_named_after_modules_and_bytes_are_reproducible(raw_dynamo):
    names = [n.name for n in raw_dynamo.graph.node]
    assert len(set(names)) == len(names)
    assert "stages.0.blocks.0.channel_mlp1.fc1/MatMul" in names and "head/Gemm" in names
    assert sum(n.endswith("/LayerNormalization") for n in names) == 25
    assert all(not n.metadata_props for n in raw_dynamo.graph.node)  # no stack traces with local paths
    again = exp.export_onnx_proto(reference_model("s"), io_spec("s"), rewrite=False).proto
    assert again.SerializeToString() == raw_dynamo.SerializeToString()


def test_layernorm_stays_one_node_at_every_opset_we_offer():
    n_ln = sum(type(m).__name__ == "LayerNorm" for m in reference_model("s").modules())
    for opset in (18, 20):
        ops = exp.op_counts(exp.export_onnx_proto(reference_model("s"), io_spec("s"), opset=opset).proto)
        assert ops["LayerNormalization"] == n_ln


# --------------------------------------------------------------------------- canonical_gelu


def test_gelu_rewrite_lets_onnxruntime_fuse_and_changes_no_bit(raw_dynamo, tmp_path):
    before = _optimized_ops(raw_dynamo, tmp_path)
    assert before.get("Erf") == 16 and "BiasGelu" not in before  # the exporter's order defeats the fusion
    fixed = onnx.ModelProto()
    fixed.CopyFrom(raw_dynamo)
    assert canonical_gelu(fixed) == 16
    after = _optimized_ops(fixed, tmp_path)
    assert after.get("BiasGelu") == 16 and "Erf" not in after
    assert canonical_gelu(fixed) == 0  # idempotent
    x = np.random.default_rng(0).standard_normal((2, 3, 97, 131)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # compare the graphs as written
    a = ort.InferenceSession(raw_dynamo.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(fixed.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    assert np.array_equal(a.run(None, {"input": x})[0], b.run(None, {"input": x})[0])


def _gelu_graph(outer_other: str, half: float = 0.5) -> onnx.ModelProto:
    """y = outer_other * (half * (1 + erf(x / sqrt2))), with x and z inputs."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("sqrt2", math.sqrt(2.0)), ("one", 1.0), ("half", half))]
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["half", "a"], ["m"]),
        helper.make_node("Mul", [outer_other, "m"], ["y"]),
    ]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "z", "y")]
    graph = helper.make_graph(nodes, "g", vi[:2], vi[2:], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_gelu_rewrite_touches_only_real_gelus():
    ok = _gelu_graph("x")
    assert canonical_gelu(ok) == 1
    assert [list(n.input) for n in ok.graph.node[-2:]] == [["x", "a"], ["m", "half"]]
    assert canonical_gelu(_gelu_graph("z")) == 0  # z * 0.5 * (1 + erf(x/sqrt2)) is not a GELU of x
    assert canonical_gelu(_gelu_graph("x", half=0.25)) == 0


# --------------------------------------------------------------------------- both paths end to end


def test_torchscript_path_still_exports_and_reports_its_deprecation(tmp_path):
    result = run_export(ExportConfig("s", output_dir=tmp_path, exporter="torchscript", shapes=SMALL_GRID))
    assert result.passed
    report = json.loads((tmp_path / "convmlp_s.report.json").read_text())
    assert report["exporter"]["name"] == "torchscript" and report["opset"] == 17
    # torch's deprecation is passed on to the user, not swallowed
    assert any("DeprecationWarning" in n for n in report["exporter"]["notes"])
    meta = exp.get_metadata(onnx.load(str(tmp_path / "convmlp_s.onnx")))
    assert meta["exporter"] == "torchscript" and meta["opset"] == "17"
    assert json.loads(meta["exporter_versions"])["torch"]


def test_default_path_raises_no_warning_for_the_user(tmp_path):
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Warning" not in res.output and "deprecated" not in res.output.lower()
    meta = exp.get_metadata(onnx.load(str(tmp_path / "convmlp_s.onnx")))
    assert meta["exporter"] == "dynamo" and meta["opset"] == "18"
    assert set(json.loads(meta["exporter_versions"])) == {"torch", "onnxscript"}


def test_check_dynamic_refuses_renamed_dims(raw_dynamo):
    broken = onnx.ModelProto()
    broken.CopyFrom(raw_dynamo)
    broken.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "s53"
    with pytest.raises(ExportError, match="named 's53', expected 'height'"):
        exp.check_dynamic(broken, io_spec("s"))
