"""``deploy.modelfile``: one record for every model file, recorded facts read, missing facts inferred the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from convmlp import create_model
from deploy.errors import DeployError, UnsupportedModel
from deploy.modelfile import describe, describe_model, describe_variant
from deploy.modelfile.metadata import KEYS, graph_metadata
from export.onnx import set_metadata


def _strip(src: Path, dst: Path) -> Path:
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.save(proto, str(dst))
    return dst


def _graph(path: Path, outputs: list[tuple[str, list]], *, qdq: str | None = None, meta: dict | None = None) -> Path:
    """Conv 3->4 feeding each output through a Reshape-free Identity; ``qdq``: Q/DQ on the input with an
    ``int8`` (symmetric, TensorRT) or ``uint8`` (asymmetric, CPU) zero point."""
    inits = [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")]
    nodes = []
    x = "input"
    if qdq:
        dtype = np.uint8 if qdq == "uint8" else np.int8
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, dtype), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node("Conv", [x, "w"], ["c"]))
    for name, _ in outputs:
        nodes.append(helper.make_node("Identity", ["c"], [name]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n, dims in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    set_metadata(model, meta or {})
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- graphs


def test_exported_graph_records_everything(s_graph_pair):
    facts = describe(s_graph_pair["fp32"])
    assert (facts.format, facts.variant, facts.kind, facts.precision, facts.num_classes) == \
        ("onnx", "s", "classifier", "fp32", 1000)
    assert {"variant", "kind", "precision", "num_classes"} <= facts.recorded
    assert facts.input_name == "input" and facts.output_names == ["logits"]
    assert facts.inputs[0].dims == (-1, 3, -1, -1) and facts.outputs[0].dims == (-1, 1000)
    assert facts.source("variant") == "recorded"


def test_stripped_fp16_graph_is_inferred_from_the_graph(s_graph_pair, tmp_path):
    facts = describe(_strip(s_graph_pair["fp16"], tmp_path / "bare.fp16.onnx"))
    assert (facts.precision, facts.kind, facts.num_classes, facts.variant) == ("fp16", "classifier", 1000, None)
    assert set(facts.inferred) == {"kind", "precision", "num_classes", "preprocessing"}
    assert facts.source("variant") == "unknown" and facts.source("precision") == "inferred"
    line = facts.inferred_line()
    assert "precision fp16 (inferred)" in line and "no variant recorded" in line and "\n" not in line
    fp32 = describe(_strip(s_graph_pair["fp32"], tmp_path / "bare.onnx"))
    assert fp32.precision == "fp32" and fp32.preprocessing.mean == (0.485, 0.456, 0.406)


def test_int8_layout_is_read_off_the_zero_points(tmp_path):
    out = [("logits", ["batch", 7])]
    trt = describe(_graph(tmp_path / "t.onnx", out, qdq="int8"))
    cpu = describe(_graph(tmp_path / "c.onnx", out, qdq="uint8"))
    assert (trt.precision, trt.int8_layout) == ("int8", "tensorrt")
    assert (cpu.precision, cpu.int8_layout) == ("int8", "cpu") and "int8_layout" in cpu.inferred
    recorded = describe(_graph(tmp_path / "r.onnx", out, qdq="uint8", meta={"int8_layout": "cpu"}))
    assert recorded.source("int8_layout") == "recorded"
    with pytest.raises(DeployError, match="int8_layout=tensorrt"):
        describe(_graph(tmp_path / "x.onnx", out, qdq="uint8", meta={"int8_layout": "tensorrt"}))


def test_kind_and_classes_come_from_the_outputs(tmp_path):
    cls = describe(_graph(tmp_path / "a.onnx", [("logits", ["batch", 10])]))
    assert (cls.kind, cls.num_classes) == ("classifier", 10)
    backbone = [(f"f{i + 1}", ["batch", c, "h", "w"]) for i, c in enumerate((64, 128, 256, 512))]  # S's F1..F4
    feats = describe(_graph(tmp_path / "f.onnx", backbone))
    assert (feats.kind, feats.num_classes) == ("features", None)
    # a backbone records its classifier's head size: not a contradiction
    rec = describe(_graph(tmp_path / "g.onnx", backbone, meta={"kind": "features", "num_classes": "1000"}))
    assert rec.kind == "features" and rec.num_classes is None


@pytest.mark.parametrize("outputs", [
    [("output", ["batch", 3, "h", "w"])],  # an identity graph
    [("f1", ["batch", 4, "h", "w"]), ("f2", ["batch", 4, "h", "w"])],  # rank 4, but not the 4 maps
    [(f"f{i + 1}", ["batch", c, "h", "w"]) for i, c in enumerate((64, 128, 256, 999))],  # channels no variant has
])
def test_rank_4_outputs_that_are_not_the_backbone_are_refused(tmp_path, outputs):
    with pytest.raises(UnsupportedModel, match="a ConvMLP backbone outputs the 4 feature maps f1..f4"):
        describe(_graph(tmp_path / "r.onnx", outputs))


@pytest.mark.parametrize("outputs, found", [
    ([("logits", ["batch", 10, 7])], "logits [-1, 10, 7]"),
    ([("logits", ["batch", "classes"])], "no fixed class count"),
    ([("a", ["batch", 10]), ("b", ["batch", 10])], "a [-1, 10], b [-1, 10]"),
])
def test_outputs_no_convmlp_has_are_refused_naming_them(tmp_path, outputs, found):
    with pytest.raises(UnsupportedModel, match=found.replace("[", r"\[").replace("]", r"\]")):
        describe(_graph(tmp_path / "x.onnx", outputs))


def test_records_the_graph_contradicts_name_both(s_graph_pair, tmp_path):
    proto = onnx.load(str(s_graph_pair["fp16"]))
    set_metadata(proto, {"precision": "fp32"})
    onnx.save(proto, str(tmp_path / "lying.onnx"))
    with pytest.raises(DeployError, match="precision=fp32 but the ONNX graph itself computes in fp16"):
        describe(tmp_path / "lying.onnx")
    with pytest.raises(DeployError, match="num_classes=10 but"):
        describe(_graph(tmp_path / "n.onnx", [("logits", ["batch", 4])], meta={"num_classes": "10"}))


def test_unreadable_files_are_runtime_errors(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(DeployError, match="not a readable ONNX model"):
        describe(junk)
    with pytest.raises(DeployError, match="not found"):
        describe(tmp_path / "none.onnx")


def test_preprocessing_is_recorded_or_the_variants(tmp_path):
    meta = {"variant": "m", "mean": json.dumps([0.5, 0.5, 0.5]), "std": json.dumps([0.25, 0.25, 0.25]),
            "crop_pct": "0.9"}
    facts = describe(_graph(tmp_path / "p.onnx", [("logits", ["batch", 4])], meta=meta))
    assert facts.preprocessing.mean == (0.5, 0.5, 0.5) and facts.preprocessing.crop_pct == 0.9
    assert facts.source("preprocessing") == "recorded" and facts.variant == "m"
    with pytest.raises(DeployError, match="'mean' is not a list of 3 numbers"):
        describe(_graph(tmp_path / "bad.onnx", [("logits", ["batch", 4])], meta={"mean": "[1, 2]"}))


def test_the_writer_writes_exactly_the_documented_keys():
    from convmlp import PRETRAINED_CFGS

    meta = graph_metadata(variant="s", kind="classifier", precision="fp32", num_classes=10, input_name="input",
                          output_names=["logits"], cfg=PRETRAINED_CFGS["s"], checkpoint_sha256=None,
                          weights="synthetic(seed=0)", exporter="dynamo", exporter_versions={}, opset=18,
                          producer_versions={})
    assert set(meta) == set(KEYS) and all(isinstance(v, str) for v in meta.values())


# --------------------------------------------------------------------------- engines and PyTorch


def test_engine_record_comes_from_its_sidecar(make_engine):
    plan = make_engine(metadata={"mean": "[0.5, 0.5, 0.5]", "std": "[0.5, 0.5, 0.5]", "weights": "ck.pth"})
    facts = describe(plan)
    assert (facts.format, facts.variant, facts.precision, facts.num_classes) == ("engine", "s", "fp16", 1000)
    assert facts.max_batch == 32 and facts.opt_batches == (8,) and facts.hw_range == ((128, 128), (1024, 1024))
    assert facts.preprocessing.mean == (0.5, 0.5, 0.5) and facts.weights == "ck.pth"
    feats = describe(make_engine("f.engine", kind="features"))
    assert [t.dims for t in feats.outputs] == [(-1, 64, -1, -1), (-1, 128, -1, -1), (-1, 256, -1, -1), (-1, 512, -1, -1)]
    older = describe(make_engine("old.engine"))  # a sidecar without metadata: the variant's ImageNet config
    assert older.source("preprocessing") == "inferred"


def test_variant_record_takes_the_heads_classes_from_the_checkpoint(make_checkpoint):
    ck = make_checkpoint("s", num_classes=10)
    facts = describe_variant("s", weights=ck)
    assert (facts.format, facts.num_classes, facts.outputs[0].dims) == ("pytorch", 10, (-1, 10))
    assert len(facts.checkpoint_sha256) == 64 and facts.weights == str(ck)
    with pytest.raises(UnsupportedModel, match="10-class head, not 1000"):
        describe_variant("s", weights=ck, num_classes=1000)
    assert describe_variant("l").num_classes == 1000 and describe_variant("l").synthetic
    built = describe_model(create_model("s", weights=ck))
    assert built.num_classes == 10 and built.checkpoint_sha256 == facts.checkpoint_sha256


def test_create_model_sizes_the_head_from_the_checkpoint(make_checkpoint):
    ck = make_checkpoint("s", num_classes=10)
    model = create_model("s", weights=ck)
    assert model.num_classes == 10 and model.head.out_features == 10
    state = torch.load(ck, weights_only=True)
    assert torch.equal(model.head.weight, state["head.weight"])
    from convmlp import CheckpointError

    with pytest.raises(CheckpointError, match="head has 10 classes, not the 1000"):
        create_model("s", weights=ck, num_classes=1000)
    same = create_model("s", synthetic_seed=0).state_dict()
    again = create_model("s", synthetic_seed=0).state_dict()
    assert all(torch.equal(same[k], again[k]) for k in same)
    with pytest.raises(ValueError, match="at most one"):
        create_model("s", weights=ck, synthetic_seed=0)
