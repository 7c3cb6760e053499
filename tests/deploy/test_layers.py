"""``validate --per-layer``: every tensor of the FP16 graph against the FP32 graph; a damaged layer is pinned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import cli
from deploy.layer_errors import compare_layers
from deploy.reference import sample_images

DAMAGED = "stages.1.blocks.0.channel_mlp1.fc1/MatMul"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, s_graph_pair) -> dict[str, Path]:
    """The FP32/FP16 pair, and the FP16 graph with one layer's weights damaged (its FP32 graph beside it)."""
    bad = tmp_path_factory.mktemp("layers-bad")
    half = onnx.load(str(s_graph_pair["fp16"]))
    node = next(n for n in half.graph.node if n.name == DAMAGED)
    init = next(i for i in half.graph.initializer if i.name == node.input[1])
    init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) * -3).astype(np.float16), init.name))
    onnx.save(half, str(bad / "convmlp_s.fp16.onnx"))
    (bad / "convmlp_s.onnx").write_bytes(s_graph_pair["fp32"].read_bytes())
    return {**s_graph_pair, "bad": bad / "convmlp_s.fp16.onnx"}


def test_every_tensor_of_the_fp32_graph_is_matched(graphs):
    report = compare_layers(graphs["fp16"], graphs["fp32"], sample_images((1, 3, 224, 224), 0))
    fp32 = onnx.load(str(graphs["fp32"]))
    produced = {o for n in fp32.graph.node for o in n.output}
    matched = {e.tensor for e in report.layers}
    assert len(report.layers) >= 230 and matched <= produced
    assert len(report.unmatched) <= 2  # shape arithmetic the converter casts, nothing of the model
    assert [e.index for e in report.layers] == list(range(len(report.layers)))
    by_node = {e.node: e for e in report.layers}
    assert "head/Gemm" in by_node and 1e-5 < by_node["head/Gemm"].rel_l2 < 3e-3  # really FP16, still close
    assert report.first_jump is None  # FP16 error grows smoothly


def test_a_damaged_layer_is_pinned(graphs):
    report = compare_layers(graphs["bad"], graphs["fp32"], sample_images((1, 3, 224, 224), 0))
    assert report.first_jump is not None and report.first_jump.node == DAMAGED
    before = [e.rel_l2 for e in report.layers[: report.first_jump.index]]
    assert max(before) < 1e-2 < report.first_jump.rel_l2


def test_cli_per_layer_table_and_json(graphs, tmp_path):
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(graphs["bad"]), "--per-layer"])
    assert res.exit_code == 3  # the graph also fails its gate
    assert f"first jump: {DAMAGED} (MatMul" in res.stdout and "stages.0.blocks.0.norm1/LayerNormalization" in res.stdout
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(graphs["fp16"]), "--per-layer", "--json",
                                        "--json-out", str(tmp_path / "v.json")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["per_layer"]["first_jump"] is None and len(data["per_layer"]["layers"]) >= 230
    assert json.loads((tmp_path / "v.json").read_text()) == data


def test_per_layer_needs_its_fp32_graph(graphs, tmp_path):
    alone = tmp_path / "convmlp_s.fp16.onnx"
    alone.write_bytes(graphs["fp16"].read_bytes())
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(alone), "--per-layer"])
    assert res.exit_code == 1 and "no FP32 graph convmlp_s.onnx beside" in res.output
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(alone), "--per-layer",
                                        "--reference-onnx", str(graphs["fp32"]), "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(alone), "--reference-onnx", str(graphs["fp32"])])
    assert res.exit_code == 2 and "--reference-onnx goes with --per-layer" in res.output
