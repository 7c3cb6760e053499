"""Triton repository entries: configs parse with Triton's own schema and match the model file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from cli import main
from convmlp.spec import io_spec
from export.onnx import set_metadata

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (test extra) is not installed"
)
text_format = pytest.importorskip("google.protobuf.text_format")

_ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}


def _parse(path: Path):
    cfg = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), cfg)  # raises on any field Triton does not know
    return cfg


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(s_onnx, path: Path, *, features: bool, meta: dict[str, str] | None = None) -> Path:
    spec = io_spec("s", features=features)
    s_onnx(path, features=features)
    proto = onnx.load(str(path))
    set_metadata(proto, meta or {"variant": "s", "kind": spec.kind, "precision": "fp32",
                                 **({} if features else {"num_classes": "1000"})})
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory, s_onnx) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "classifier": _export(s_onnx, d / "s.onnx", features=False),
        "features": _export(s_onnx, d / "s_features.onnx", features=True),
    }


@pytest.fixture
def engine_file(make_engine):
    def make(*, kind: str = "classifier", max_b: int = 32, opt_b: int = 8) -> Path:
        return make_engine(
            f"s_{kind}.engine", kind=kind, profile=((1, 3, 128, 128), (opt_b, 3, 224, 224), (max_b, 3, 1024, 1024))
        )

    return make


def _run(*args: str):
    return CliRunner().invoke(main, ["triton", *map(str, args)])


def _graph_io(path: Path) -> tuple[list, list]:
    g = onnx.load(str(path)).graph

    def conv(vi):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        return vi.name, _ONNX_TO_TRITON[vi.type.tensor_type.elem_type], dims[1:]

    return [conv(i) for i in g.input], [conv(o) for o in g.output]


# --------------------------------------------------------------------------- ONNX entries


@pytest.mark.parametrize("kind", ["classifier", "features"])
def test_onnx_entry_matches_graph(onnx_models, tmp_path: Path, kind: str) -> None:
    src = onnx_models[kind]
    repo = tmp_path / "repo"
    res = _run("--onnx", src, "--repository", repo, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    name = "convmlp_s_onnx" if kind == "classifier" else "convmlp_s_features_onnx"
    assert out["model_name"] == name
    entry = repo / name
    cfg = _parse(entry / "config.pbtxt")
    assert cfg.name == name and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 32
    assert _sha(entry / "1" / "model.onnx") == _sha(src)
    inputs, outputs = _graph_io(entry / "1" / "model.onnx")
    got_in = [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input]
    got_out = [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in cfg.output]
    assert got_in == inputs == [("input", "TYPE_FP32", [3, -1, -1])]
    assert got_out == outputs
    if kind == "classifier":
        assert got_out == [("logits", "TYPE_FP32", [1000])]
    else:
        assert [o[0] for o in got_out] == ["f1", "f2", "f3", "f4"]
        assert [o[2] for o in got_out] == [[c.dims[1], -1, -1] for c in io_spec("s", features=True).outputs]
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group] == [
        (1, "KIND_GPU")
    ]
    assert cfg.HasField("dynamic_batching")


def test_onnx_options_and_rewrite(onnx_models, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    res = _run("--onnx", onnx_models["classifier"], "--repository", repo, "--model-name", "cls",
               "--max-batch-size", "16", "--instances", "3", "--preferred-batch-sizes", "4", "16", "8")
    assert res.exit_code == 0, res.output
    cfg = _parse(repo / "cls" / "config.pbtxt")
    assert cfg.max_batch_size == 16 and cfg.instance_group[0].count == 3
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    res = _run("--onnx", onnx_models["classifier"], "--repository", repo, "--model-name", "cls",
               "--no-dynamic-batching")
    assert res.exit_code == 0, res.output
    assert not _parse(repo / "cls" / "config.pbtxt").HasField("dynamic_batching")
    assert sorted(p.name for p in (repo / "cls").rglob("*")) == ["1", "config.pbtxt", "model.onnx"]


def test_onnx_metadata_contradicting_graph(onnx_models, tmp_path: Path) -> None:
    src = tmp_path / "bad.onnx"
    proto = onnx.load(str(onnx_models["classifier"]))
    set_metadata(proto, {"num_classes": "10"})
    onnx.save(proto, str(src))
    res = _run("--onnx", src, "--repository", tmp_path / "repo")
    assert res.exit_code == 1
    assert "num_classes=10" in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "repo" / "convmlp_s_onnx").exists()


# --------------------------------------------------------------------------- engine entries


def test_engine_entry_from_sidecar(tmp_path: Path, engine_file) -> None:
    plan = engine_file()
    repo = tmp_path / "repo"
    res = _run("--engine", plan, "--repository", repo)
    assert res.exit_code == 0, res.output
    entry = repo / "convmlp_s_trt"
    cfg = _parse(entry / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 32
    assert (entry / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("input", [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("logits", [1000])]
    # default preferred sizes: the profile's opt batch and the max batch
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]
    assert "TensorRT 10.8.0.43" in (entry / "config.pbtxt").read_text()


def test_features_engine_dims_from_spec(tmp_path: Path, engine_file) -> None:
    plan = engine_file(kind="features", max_b=4, opt_b=2)
    res = _run("--engine", plan, "--repository", tmp_path / "repo", "--instances", "2")
    assert res.exit_code == 0, res.output
    cfg = _parse(tmp_path / "repo" / "convmlp_s_features_trt" / "config.pbtxt")
    chans = {t.name: t.dims[1] for t in io_spec("s", features=True).outputs}
    assert [(t.name, list(t.dims)) for t in cfg.output] == [(n, [c, -1, -1]) for n, c in chans.items()]
    assert cfg.max_batch_size == 4 and cfg.instance_group[0].count == 2


# --------------------------------------------------------------------------- refusals


def test_max_batch_above_engine_is_refused(tmp_path: Path, engine_file) -> None:
    res = _run("--engine", engine_file(), "--repository", tmp_path / "repo", "--max-batch-size", "64")
    assert res.exit_code == 2
    assert "above the engine's largest profile batch (32)" in res.output
    assert not (tmp_path / "repo" / "convmlp_s_trt").exists()


def test_preferred_above_max_batch_is_refused(tmp_path: Path, engine_file) -> None:
    res = _run("--engine", engine_file(), "--repository", tmp_path / "repo",
               "--max-batch-size", "16", "--preferred-batch-sizes", "8", "32")
    assert res.exit_code == 2 and "preferred batch size(s) 32 not in 1..16" in res.output


def test_bad_paths(tmp_path: Path, engine_file) -> None:
    plan = engine_file()
    res = _run("--engine", tmp_path / "missing.engine", "--repository", tmp_path / "repo")
    assert res.exit_code == 2 and "does not exist" in res.output
    a_file = tmp_path / "repo.txt"
    a_file.write_text("x")
    res = _run("--engine", plan, "--repository", a_file)
    assert res.exit_code == 2 and "is a file" in res.output
    res = _run("--repository", tmp_path / "repo")
    assert res.exit_code == 2 and "exactly one of --engine or --onnx" in res.output
    (tmp_path / "bare.engine").write_bytes(b"x")
    res = _run("--engine", tmp_path / "bare.engine", "--repository", tmp_path / "repo")
    assert res.exit_code == 1 and "sidecar" in res.output and "Traceback" not in res.output


def test_failed_copy_keeps_existing_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_file) -> None:
    repo = tmp_path / "repo"
    plan = engine_file()
    assert _run("--engine", plan, "--repository", repo, "--max-batch-size", "32").exit_code == 0
    entry = repo / "convmlp_s_trt"
    before = {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()}

    import deploy.commands.triton as triton_mod

    def broken_copy(src, dst, *a, **k):
        Path(dst).write_bytes(b"half")
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(triton_mod.shutil, "copyfile", broken_copy)
    res = _run("--engine", plan, "--repository", repo, "--max-batch-size", "16")
    assert res.exit_code == 1 and "No space left on device" in res.output
    after = {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()}
    assert after == before  # same files, same bytes, no temp files left
    assert _parse(entry / "config.pbtxt").max_batch_size == 32


# --------------------------------------------------------------------------- CPU: onnxruntime and OpenVINO


def _kinds(cfg) -> list[tuple[int, str]]:
    return [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group]


def test_onnx_on_cpu_instances(onnx_models, tmp_path: Path) -> None:
    res = _run("--onnx", onnx_models["classifier"], "--repository", tmp_path, "--instance-kind", "cpu",
               "--instances", "2")
    assert res.exit_code == 0, res.output
    assert "2 x KIND_CPU" in res.output
    cfg = _parse(tmp_path / "convmlp_s_onnx" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and _kinds(cfg) == [(2, "KIND_CPU")]


def test_openvino_entry(onnx_models, tmp_path: Path) -> None:
    labels = tmp_path / "names.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(1000)))
    res = _run("--onnx", onnx_models["classifier"], "--repository", tmp_path / "repo", "--backend", "openvino",
               "--labels", labels, "--threads", "2", "--streams", "2", "--json")
    assert res.exit_code == 0, res.output
    entry = tmp_path / "repo" / "convmlp_s_openvino"
    cfg = _parse(entry / "config.pbtxt")
    assert cfg.backend == "openvino" and not cfg.platform and cfg.default_model_filename == "model.onnx"
    assert _kinds(cfg) == [(1, "KIND_CPU")]
    assert {k: v.string_value for k, v in cfg.parameters.items()} == {
        "INFERENCE_NUM_THREADS": "2", "NUM_STREAMS": "2", "PERFORMANCE_HINT": "THROUGHPUT"}
    res = _run("--onnx", onnx_models["classifier"], "--repository", tmp_path / "bf16", "--backend", "openvino",
               "--precision", "bf16")
    assert res.exit_code == 0, res.output
    params = _parse(tmp_path / "bf16" / "convmlp_s_openvino" / "config.pbtxt").parameters
    assert params["HINT_BF16"].string_value == "YES"
    assert cfg.output[0].label_filename == "labels.txt"
    assert (entry / "labels.txt").read_text() == labels.read_text()
    assert _sha(entry / "1" / "model.onnx") == _sha(onnx_models["classifier"])
    # rewritten without labels: the stale labels file goes
    res = _run("--onnx", onnx_models["classifier"], "--repository", tmp_path / "repo", "--backend", "openvino")
    assert res.exit_code == 0 and not (entry / "labels.txt").exists()
    assert not _parse(entry / "config.pbtxt").output[0].label_filename


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "openvino", "--instance-kind", "gpu"], "OpenVINO backend runs on the CPU"),
        (["--backend", "tensorrt"], "does not serve an ONNX graph"),
        (["--threads", "2"], "OpenVINO backend parameters"),
        (["--precision", "bf16"], "onnxruntime backend runs the precision of its file"),
        (["--backend", "openvino", "--precision", "fp16"], "sets bf16 (HINT_BF16) or its default, not fp16"),
    ],
)
def test_cpu_option_mistakes(onnx_models, tmp_path: Path, args: list[str], message: str) -> None:
    res = _run("--onnx", onnx_models["classifier"], "--repository", tmp_path, *args)
    assert res.exit_code == 2 and message in res.output
    assert not any(tmp_path.iterdir())


def test_labels_must_match_the_classes(onnx_models, tmp_path: Path, engine_file) -> None:
    labels = tmp_path / "names.txt"
    labels.write_text("a\nb\n")
    res = _run("--onnx", onnx_models["classifier"], "--repository", tmp_path / "r", "--labels", labels)
    assert res.exit_code == 2 and "2 labels but the model has 1000 classes" in res.output
    res = _run("--onnx", onnx_models["features"], "--repository", tmp_path / "r", "--labels", labels)
    assert res.exit_code == 2 and "applies to a classifier" in res.output
    res = _run("--engine", engine_file(), "--repository", tmp_path / "r", "--instance-kind", "cpu")
    assert res.exit_code == 2 and "GPU only" in res.output


def test_engine_labels_come_from_its_sidecar_and_a_file_overrides_them(make_engine, tmp_path: Path) -> None:
    from deploy.modelfile import describe
    from deploy.modelfile.metadata import SIDECAR_KEYS, labels_metadata

    names = [f"n{i:04d}" for i in range(1000)]
    assert "labels" in SIDECAR_KEYS  # build copies them from the graph into the sidecar
    engine = make_engine("l.engine", metadata=labels_metadata(names))
    assert describe(engine).labels == tuple(names)
    res = _run("--engine", engine, "--repository", tmp_path / "r", "--model-name", "m", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["labels"] == "model metadata", res.output
    assert (tmp_path / "r" / "m" / "labels.txt").read_text().splitlines() == names
    given = tmp_path / "given.txt"
    given.write_text("".join(f"g{i}\n" for i in range(1000)))
    res = _run("--engine", engine, "--repository", tmp_path / "r", "--model-name", "m", "--labels", given)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "m" / "labels.txt").read_text() == given.read_text()
    short = make_engine("short.engine", metadata=labels_metadata(names[:10]))
    res = _run("--engine", short, "--repository", tmp_path / "r2")
    assert res.exit_code != 0 and "lists 10 labels for 1000 classes" in res.output and not (tmp_path / "r2").exists()


def test_schema_check_refuses_what_triton_would_not_parse() -> None:
    from deploy.commands.triton import check_schema
    from deploy.errors import DeployError

    assert check_schema('name: "m"\nbackend: "openvino"\nmax_batch_size: 4\n') is True
    with pytest.raises(DeployError, match="would not parse as Triton's ModelConfig"):
        check_schema('name: "m"\nbackend: "openvino"\ninstance_kind: KIND_CPU\n')


def test_an_entry_of_another_precision_is_not_replaced_silently(s_graph_pair, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert _run("--onnx", s_graph_pair["fp32"], "--repository", repo).exit_code == 0
    config = (repo / "convmlp_s_onnx" / "config.pbtxt").read_text()
    res = _run("--onnx", s_graph_pair["fp16"], "--repository", repo)  # the same default name
    assert res.exit_code == 2 and "already serves convmlp_s.onnx (fp32), not convmlp_s.fp16.onnx (fp16)" in res.output
    assert (repo / "convmlp_s_onnx" / "config.pbtxt").read_text() == config
    assert _run("--onnx", s_graph_pair["fp32"], "--repository", repo).exit_code == 0  # the same model again: fine
    res = _run("--onnx", s_graph_pair["fp16"], "--repository", repo, "--overwrite")
    assert res.exit_code == 0 and "precision=fp16" in (repo / "convmlp_s_onnx" / "config.pbtxt").read_text()


def test_a_truncated_ir_is_refused_before_the_entry_is_touched(s_graph_pair, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    import onnx as onnx_mod

    from export.openvino import write_ir

    meta = {p.key: p.value for p in onnx_mod.load(str(s_graph_pair["fp32"])).metadata_props}
    xml = write_ir(s_graph_pair["fp32"].read_bytes(), tmp_path / "convmlp_s.openvino.xml", meta)
    repo = tmp_path / "repo"
    assert _run("--onnx", xml, "--repository", repo).exit_code == 0
    entry = repo / "convmlp_s_openvino" / "1"
    good = (entry / "model.bin").read_bytes()
    xml.with_suffix(".bin").write_bytes(good[: 1 << 20])  # cut to 1 MiB
    res = _run("--onnx", xml, "--repository", repo)
    assert res.exit_code == 1 and "holds 1,048,576 bytes but the IR reads up to" in res.output
    assert (entry / "model.bin").read_bytes() == good


def test_another_instance_kind_is_another_entry_and_no_gpu_is_said(s_graph_pair, tmp_path: Path) -> None:
    """A KIND_CPU entry is not silently turned into KIND_GPU by a rerun; a GPU entry written on a machine
    without a CUDA GPU says so (and a CPU entry does not)."""
    import torch

    repo = tmp_path / "repo"
    res = _run("--onnx", s_graph_pair["fp32"], "--repository", repo, "--instance-kind", "cpu", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["notes"] == []
    config = (repo / "convmlp_s_onnx" / "config.pbtxt").read_text()
    res = _run("--onnx", s_graph_pair["fp32"], "--repository", repo)  # default kind: gpu
    assert res.exit_code == 2 and "on KIND_CPU, not KIND_GPU" in res.output
    assert (repo / "convmlp_s_onnx" / "config.pbtxt").read_text() == config
    res = _run("--onnx", s_graph_pair["fp32"], "--repository", repo, "--overwrite")
    assert res.exit_code == 0, res.output
    assert ("this machine has no CUDA GPU" in res.output) == (not torch.cuda.is_available())
