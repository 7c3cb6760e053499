"""``export --openvino``: OpenVINO IR beside the graphs, validated on OpenVINO, and usable by every command."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import cli
from convmlp.weights import file_sha256
from deploy.errors import BackendUnavailable, DeployError
from deploy.modelfile import describe
from deploy.modelfile.ir import read_ir
from export import openvino as ir_writer
from export import pipeline
from export.onnx import get_metadata

pytest.importorskip("openvino")
from deploy.runners.onnxrt import OnnxRuntimeRunner  # noqa: E402
from deploy.runners.openvino import OpenVINORunner  # noqa: E402

IR_FILES = ("convmlp_s.openvino.xml", "convmlp_s.openvino.bin",
            "convmlp_s.features.openvino.xml", "convmlp_s.features.openvino.bin")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """``convmlp-deploy export -v s --fp16 --features --openvino`` once, as a user runs it."""
    out = tmp_path_factory.mktemp("ir")
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--fp16", "--features", "--openvino", "-o", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def test_ir_written_for_each_graph_but_fp16_and_validated_on_openvino(exported):
    names = {p.name for p in exported.iterdir()}
    assert set(IR_FILES) <= names
    assert not any(n.startswith("convmlp_s.fp16.openvino") for n in names)  # FP16 is a run-time hint on OpenVINO
    assert not any(n.startswith(".") for n in names)  # no staging leftovers
    report = json.loads((exported / "convmlp_s.report.json").read_text())
    assert report["openvino"]["compress_to_fp16"] is False
    for name, source in (("fp32.openvino", "fp32"), ("features.openvino", "features")):
        g = report["graphs"][name]
        v = g["validation"]
        assert v["passed"] and v["backend"] == "openvino[CPU,fp32]" and v["tolerance"]["precision"] == "fp32"
        assert max(o["rel_l2"] for c in v["cases"] for o in c["outputs"]) < 1e-4
        assert len(v["cases"]) == len(report["graphs"][source]["validation"]["cases"])  # the same grid
        xml, weights = Path(g["path"]), Path(g["weights_path"])
        assert g["sha256"] == file_sha256(xml) and g["weights_sha256"] == file_sha256(weights)
        assert g["size_bytes"] == xml.stat().st_size + weights.stat().st_size


def test_ir_carries_the_graph_metadata_and_its_source(exported):
    onnx_meta = get_metadata(onnx.load(str(exported / "convmlp_s.onnx"), load_external_data=False))
    info = read_ir(exported / "convmlp_s.openvino.xml")
    assert {k: info.metadata[k] for k in onnx_meta} == onnx_meta
    assert info.metadata["source_onnx"] == "convmlp_s.onnx"
    assert info.metadata["source_onnx_sha256"] == file_sha256(exported / "convmlp_s.onnx")
    assert describe(exported / "convmlp_s.openvino.xml").precision == "fp32" and info.input_names == ["input"] and info.output_names == ["logits"]
    assert info.inputs[0].dims == (-1, 3, -1, -1) and info.outputs[0].dims == (-1, 1000)
    features = read_ir(exported / "convmlp_s.features.openvino.xml")
    assert features.output_names == ["f1", "f2", "f3", "f4"] and features.metadata["kind"] == "features"
    # weights stay FP32: no FP16 constants, and the .bin is as large as the graph's weights
    consts = ET.parse(exported / "convmlp_s.openvino.xml").getroot().findall("layers/layer[@type='Const']/data")
    assert consts and not any(c.get("element_type") == "f16" for c in consts)


@pytest.mark.parametrize("shape", [(2, 3, 97, 131), (1, 3, 320, 192)])
def test_ir_computes_what_its_onnx_graph_computes(exported, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with OnnxRuntimeRunner(exported / "convmlp_s.onnx") as ort, \
            OpenVINORunner(exported / "convmlp_s.openvino.xml", precision="f32", cache_dir="") as ov:
        ref, got = ort.infer(x)["logits"], ov.infer(x)["logits"]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5


def test_commands_take_the_ir(exported, tmp_path):
    xml = str(exported / "convmlp_s.openvino.xml")
    res = invoke("validate", "--onnx", xml, "--precision", "f32", "--json")  # backend: openvino, from the .xml
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["backend"] == "openvino[CPU,fp32]" and data["passed"] and "convmlp_s.openvino.xml" in data["model"]

    res = invoke("benchmark", "--onnx", xml, "-r", "64", "--iterations", "2", "--warmup-ms", "0", "--json", "-")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["results"]
    assert row["backend"] == "openvino" and row["variant"] == "s" and row["model"] == "convmlp_s.openvino.xml"

    repo = tmp_path / "repo"
    res = invoke("triton", "--onnx", xml, "--repository", str(repo))
    assert res.exit_code == 0, res.output
    entry = repo / "convmlp_s_openvino"
    assert sorted(p.name for p in (entry / "1").iterdir()) == ["model.bin", "model.xml"]
    assert file_sha256(entry / "1" / "model.bin") == file_sha256(exported / "convmlp_s.openvino.bin")
    config = (entry / "config.pbtxt").read_text()
    assert 'backend: "openvino"' in config and 'default_model_filename: "model.xml"' in config
    assert "KIND_CPU" in config and "platform" not in config
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from deploy.commands.triton import check_schema

    assert check_schema(config)


def test_ir_refused_where_it_cannot_run(exported, tmp_path):
    xml = str(exported / "convmlp_s.openvino.xml")
    for args, message in (
        (("validate", "--onnx", xml, "--backend", "onnxruntime"), "run it with --backend openvino"),
        (("build", "--onnx", xml), "build takes an ONNX graph"),
        (("triton", "--onnx", xml, "--repository", str(tmp_path / "r"), "--backend", "onnxruntime"),
         "does not serve an OpenVINO IR"),
        (("validate", "--onnx", xml, "--per-layer"), "give the .onnx this IR came from"),
    ):
        res = invoke(*args)
        assert res.exit_code == 2 and message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    lone = tmp_path / "lone" / "convmlp_s.openvino.xml"
    lone.parent.mkdir()
    shutil.copyfile(xml, lone)  # the .xml without its .bin
    res = invoke("validate", "--onnx", str(lone))
    assert res.exit_code == 1 and "convmlp_s.openvino.bin is missing" in res.output
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<html><body>no</body></html>")
    garbage.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(DeployError, match="not an OpenVINO IR"):
        read_ir(garbage)


def test_result_names_fall_back_to_the_producer_port(exported, tmp_path):
    """IRs from older OpenVINO versions name outputs on the producing port only."""
    for suffix in (".xml", ".bin"):
        shutil.copyfile(exported / f"convmlp_s.features.openvino{suffix}", tmp_path / f"old{suffix}")
    text = (tmp_path / "old.xml").read_text()
    stripped = text.replace('output_names="f1"', "").replace('output_names="f2"', "")
    assert stripped != text
    (tmp_path / "old.xml").write_text(stripped)
    assert read_ir(tmp_path / "old.xml").output_names == ["f1", "f2", "f3", "f4"]


def _damage_first_weight(xml: Path) -> None:
    """Scale the first FP32 weight of ``xml``'s .bin by -3 (a wrong conversion, in effect)."""
    layer = next(c for c in ET.parse(xml).getroot().findall("layers/layer[@type='Const']")
                 if c.get("name", "").endswith(".weight"))
    data = layer.find("data")
    offset, size = int(data.get("offset")), int(data.get("size"))
    raw = bytearray(xml.with_suffix(".bin").read_bytes())
    raw[offset:offset + size] = (np.frombuffer(raw[offset:offset + size], np.float32) * -3).tobytes()
    xml.with_suffix(".bin").write_bytes(bytes(raw))


def test_failed_ir_validation_replaces_nothing(exported, tmp_path, monkeypatch):
    out = tmp_path / "art"
    shutil.copytree(exported, out)
    before = {p.name: file_sha256(p) for p in out.iterdir()}
    real = pipeline.write_ir

    def wrong(data, xml, meta):
        real(data, xml, meta)
        _damage_first_weight(xml)
        return xml

    monkeypatch.setattr(pipeline, "write_ir", wrong)
    res = invoke("export", "-v", "s", "--openvino", "-o", str(out))
    assert res.exit_code == 3 and "fp32.openvino graph" in res.output, res.output
    assert {p.name: file_sha256(p) for p in out.iterdir()} == before  # no new file, none replaced, no leftovers


def test_openvino_missing_fails_before_any_work(tmp_path, monkeypatch):
    def missing():
        raise BackendUnavailable("OpenVINO is not installed: pip install 'convmlp-deploy[openvino]'")

    monkeypatch.setattr(ir_writer, "import_openvino", missing)
    res = invoke("export", "-v", "s", "--openvino", "-o", str(tmp_path / "out"))
    assert res.exit_code == 1 and "--openvino" in res.output and "[openvino]" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_stale_irs_are_listed_with_their_weights(tmp_path):
    for name in ("convmlp_s.onnx", "convmlp_s.openvino.xml", "convmlp_s.openvino.bin", "convmlp_m.openvino.xml"):
        (tmp_path / name).write_bytes(b"x")
    stale = pipeline.stale_artifacts("s", tmp_path, ["fp32"])
    assert sorted(p.name for p in stale) == ["convmlp_s.openvino.bin", "convmlp_s.openvino.xml"]
    assert pipeline.stale_artifacts("s", tmp_path, ["fp32", "fp32.openvino"]) == []
