from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import cli
from convmlp import create_model
from convmlp.spec import io_spec
from deploy.loader import reference_model
from export import pipeline
from export.errors import ExportError
from export.onnx import dynamic_dims, export_onnx_proto, get_metadata
from export.pipeline import ExportConfig, run_export
from export.simplify import simplify

SMALL_GRID = ((1, 3, 64, 64), (2, 3, 97, 131))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """``convmlp-deploy export --variant s --fp16 --features`` once, as a user runs it."""
    out = tmp_path_factory.mktemp("artifacts")
    res = CliRunner().invoke(
        cli.main, ["export", "-v", "s", "--fp16", "--features", "-o", str(out)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.output
    return out


def test_writes_three_graphs_and_report(exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["convmlp_s.features.onnx", "convmlp_s.fp16.onnx", "convmlp_s.onnx", "convmlp_s.report.json"]
    report = json.loads((exported / "convmlp_s.report.json").read_text())
    assert report["passed"] is True and report["variant"] == "s" and report["opset"] == 18
    assert round(report["params"] / 1e6, 1) == 9.0 and round(report["gmacs_224"], 1) == 2.4
    for name in ("fp32", "fp16", "features"):
        g = report["graphs"][name]
        assert g["validation"]["passed"] and len(g["validation"]["cases"]) == 5
        assert g["simplification"]["nodes_after"] <= g["simplification"]["nodes_before"]
    shapes = [c["shape"] for c in report["graphs"]["fp32"]["validation"]["cases"]]
    assert [1, 3, 224, 224] in shapes and [3, 3, 97, 131] in shapes and [1, 3, 512, 512] in shapes
    assert report["graphs"]["fp16"]["validation"]["tolerance"]["max_rel_l2"] == 3e-3
    assert report["exporter"]["torch"] == torch.__version__ and report["exporter"]["name"] == "dynamo"
    assert report["exporter"]["onnxscript"] and report["exporter"]["notes"] == []


def test_graph_contract(exported):
    proto = onnx.load(str(exported / "convmlp_s.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    dims = dynamic_dims(proto)
    assert dims == {"input": ["batch", 3, "height", "width"], "logits": ["batch", 1000]}
    ops = [n.op_type for n in proto.graph.node]
    n_ln = sum(isinstance(m, torch.nn.LayerNorm) for m in reference_model("s").modules())
    assert ops.count("LayerNormalization") == n_ln  # one node per LayerNorm, never decomposed
    assert "ReduceMean" in ops or "GlobalAveragePool" in ops
    meta = get_metadata(proto)
    assert meta["variant"] == "s" and meta["num_classes"] == "1000" and meta["kind"] == "classifier"
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406] and meta["input_layout"] == "NCHW"
    assert meta["weights"] == "synthetic(seed=0)" and "torch" in json.loads(meta["producer_versions"])


def _ort(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


@pytest.mark.parametrize("shape", [(2, 3, 65, 250), (1, 3, 333, 47), (4, 3, 32, 32)])
def test_runs_at_sizes_nobody_tested(exported, shape):
    model = reference_model("s")
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (out,) = _ort(exported / "convmlp_s.onnx", x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-5


def test_fp16_graph_is_mixed_precision_with_float32_io(exported):
    proto = onnx.load(str(exported / "convmlp_s.fp16.onnx"))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [f32]
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    big = [n for n, t in inits.items() if t == f16]
    assert len(big) > 50  # conv and linear weights went to FP16
    # every LayerNormalization runs in FP32: its scale/bias initializers are float32
    for node in proto.graph.node:
        if node.op_type == "LayerNormalization":
            assert inits[node.input[1]] == f32 and inits[node.input[2]] == f32
    assert get_metadata(proto)["precision"] == "fp16"
    x = np.random.default_rng(2).standard_normal((2, 3, 96, 160)).astype(np.float32)
    (out16,) = _ort(exported / "convmlp_s.fp16.onnx", x)
    (out32,) = _ort(exported / "convmlp_s.onnx", x)
    assert out16.dtype == np.float32
    rel = np.linalg.norm(out16 - out32) / np.linalg.norm(out32)
    assert 1e-6 < rel < 3e-3  # really reduced precision, and still close
    assert (out16.argmax(1) == out32.argmax(1)).all()


def test_features_graph(exported):
    proto = onnx.load(str(exported / "convmlp_s.features.onnx"))
    dims = dynamic_dims(proto)
    assert [o.name for o in proto.graph.output] == ["f1", "f2", "f3", "f4"]
    assert dims["f3"] == ["batch", 256, "f3_height", "f3_width"]  # the spec's names, as TensorRT/Triton read them
    x = np.random.default_rng(3).standard_normal((1, 3, 97, 131)).astype(np.float32)
    outs = _ort(exported / "convmlp_s.features.onnx", x)
    assert [o.shape for o in outs] == [(1, 64, 25, 33), (1, 128, 13, 17), (1, 256, 7, 9), (1, 512, 4, 5)]


def test_validate_command_on_written_graphs(exported):
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(exported / "convmlp_s.fp16.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["passed"] and data["tolerance"]["precision"] == "fp16"
    assert all(c["outputs"][0]["top1"] == 1.0 for c in data["cases"])


def test_validate_catches_a_wrong_graph(exported, tmp_path):
    """A graph from other weights must fail validation with exit 3 and name the case."""
    wrong = create_model("s", synthetic_seed=1).eval()
    proto = export_onnx_proto(wrong, io_spec("s")).proto
    meta = {p.key: p.value for p in onnx.load(str(exported / "convmlp_s.onnx")).metadata_props}
    proto.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in meta.items())
    path = tmp_path / "wrong.onnx"
    onnx.save(proto, str(path))
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(path)])
    assert res.exit_code == 3
    assert "relative error" in res.output and "1x3x224x224" in res.output
    assert res.output.count("1x3x224x224: logits: relative error") == 1  # the reasons once, not again in Error:


def test_validate_bad_files(tmp_path, exported):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage")
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(junk)])
    assert res.exit_code == 1 and "not a readable ONNX model" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(exported / "convmlp_s.onnx"), "-v", "l"])
    assert res.exit_code == 1 and "is ConvMLP-S, not ConvMLP-L" in res.output


def test_failed_validation_replaces_nothing(exported, tmp_path, monkeypatch):
    out = tmp_path / "art"
    out.mkdir()
    good = out / "convmlp_s.onnx"
    good.write_bytes((exported / "convmlp_s.onnx").read_bytes())
    before = good.read_bytes()
    from deploy.compare import Tolerance

    monkeypatch.setattr(pipeline, "tolerance_for", lambda p: Tolerance(p, 0.0, True))
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(out), "--json-out", str(tmp_path / "r.json")])
    assert res.exit_code == 3 and "nothing written" in res.output
    assert good.read_bytes() == before
    # no temp files left; the failed graph is kept in rejected/, never at its final name
    assert sorted(p.name for p in out.iterdir()) == ["convmlp_s.onnx", "rejected"]
    assert [p.name for p in (out / "rejected").iterdir()] == ["convmlp_s.onnx"]
    assert f"kept as {out / 'rejected' / 'convmlp_s.onnx'}" in " ".join(res.output.split())
    report = json.loads((tmp_path / "r.json").read_text())  # --json-out keeps the failed run's report
    assert report["passed"] is False and report["graphs"]["fp32"]["validation"]["failures"]


def test_unwritable_output_dir(tmp_path):
    """The command line refuses an output folder it cannot write into while parsing (exit 2, as --json-out);
    the library says the same at run time (exit 1 from the CLI's mapping)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for where, says in ((blocker / "sub", f"{blocker} is a file, not a folder"), (blocker, "is a file"),
                        (Path("/proc/nope"), "folder /proc takes no new file")):
        res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(where)])
        assert res.exit_code == 2 and "--output-dir" in res.output and says in res.output, res.output
        assert "Traceback" not in res.output and "validating" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe leaves nothing behind
    with pytest.raises(ExportError, match="not writable"):
        run_export(ExportConfig("s", output_dir=blocker / "sub"))


@pytest.mark.parametrize("given", [("--int8-layout", "cpu"), ("--int8-fallback", "off"), ("--int8-fallback", "auto"),
                                   ("--calibration-count", "5"), ("--calibration-method", "entropy"),
                                   ("--int8-fallback-limit", "3")])
def test_int8_options_without_int8_are_refused(tmp_path, given):
    """Every INT8-only option given without --int8 is exit 2 with one line, even when it repeats the default."""
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(tmp_path / "o"), *given])
    assert res.exit_code == 2 and f"{given[0]} applies to --int8 exports" in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_several_int8_options_are_named_together(tmp_path):
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(tmp_path / "o"), "--int8-layout", "cpu",
                                        "--calibration-count", "5"])
    assert res.exit_code == 2 and "--calibration-count and --int8-layout apply to --int8" in res.output
    # with --int8 they are the export's: the next check (no --calibration) speaks, not this one
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(tmp_path / "o"), "--int8", "--int8-layout",
                                        "cpu"])
    assert res.exit_code == 2 and "--int8 and --calibration DIR go together" in res.output


def test_export_options_come_from_the_tables_and_the_library_defaults():
    from export.config import ExportConfig as Config
    from export.fallback import MODES
    from export.int8 import LAYOUTS, METHODS
    from export.onnx import EXPORTERS
    from export.simplify import SIMPLIFIERS

    params = {p.name: p for p in cli.main.commands["export"].params}
    for name, table in (("exporter", EXPORTERS), ("calibration_method", METHODS), ("int8_layout", LAYOUTS),
                        ("int8_fallback", MODES), ("simplifier", SIMPLIFIERS)):
        assert list(params[name].type.choices) == list(table)
    defaults = Config("s")
    for name in ("num_classes", "exporter", "opset", "fp16", "features", "openvino", "int8", "calibration_count",
                 "calibration_method", "int8_layout", "int8_fallback", "int8_fallback_limit", "simplifier"):
        assert params[name].default == getattr(defaults, name), name
    assert Path(params["output_dir"].default) == defaults.output_dir


@pytest.mark.slow
def test_sigint_cleans_up_and_exits_130(tmp_path):
    """Ctrl-C while a graph is staged: exit 130 (128 + SIGINT), one line, nothing staged or created is left."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "new" / "art"
    proc = subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", "export", "-v", "s", "-o", str(out)],
                            cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline, staged = time.monotonic() + 180, []
    for line in proc.stderr:
        if "validating on onnxruntime" in line or time.monotonic() > deadline:
            staged = list(out.glob(".convmlp_s.onnx.*.tmp"))
            break
    assert staged, "the export never staged its graph"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 128 + signal.SIGINT
    rest = proc.stderr.read()
    assert "Aborted! (SIGINT" in rest and "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert not (tmp_path / "new").exists()  # its staged graph and the folders it made are gone


def test_simplifier_guard_rejects_growth_and_lost_dynamic_dims(monkeypatch, s_onnx, tmp_path):
    spec = io_spec("s")
    proto = onnx.load(str(s_onnx(tmp_path / "s.onnx")))
    n = len(proto.graph.node)

    def grow(name, p):
        out = onnx.ModelProto()
        out.CopyFrom(p)
        out.graph.node.extend([onnx.helper.make_node("Identity", ["logits"], ["unused"])])
        return out

    monkeypatch.setattr("export.simplify._run", grow)
    kept, res = simplify(proto, spec, "onnxslim")
    assert kept is proto and not res.accepted and "grew" in res.reason and res.nodes_after == n + 1

    def fix_batch(name, p):
        out = onnx.ModelProto()
        out.CopyFrom(p)
        out.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
        return out

    monkeypatch.setattr("export.simplify._run", fix_batch)
    kept, res = simplify(proto, spec, "onnxslim")
    assert kept is proto and not res.accepted and "not dynamic" in res.reason


def test_onnxsim_is_guarded_too(s_onnx, tmp_path):
    pytest.importorskip("onnxsim")
    spec = io_spec("s")
    proto = onnx.load(str(s_onnx(tmp_path / "s.onnx")))
    kept, res = simplify(proto, spec, "onnxsim")
    assert res.simplifier == "onnxsim" and res.version
    assert len(kept.graph.node) <= len(proto.graph.node)
    assert res.accepted == (res.nodes_after <= res.nodes_before)


def test_library_export_with_checkpoint_records_sha(make_checkpoint, tmp_path):
    ckpt = make_checkpoint("s", wrap="state_dict", seed=9)
    result = run_export(ExportConfig("s", output_dir=tmp_path, weights=ckpt, shapes=SMALL_GRID, simplifier="none"))
    assert result.passed
    meta = get_metadata(onnx.load(str(tmp_path / "convmlp_s.onnx")))
    from convmlp.weights import file_sha256

    assert meta["checkpoint_sha256"] == file_sha256(ckpt)
    # validate without the checkpoint is refused with a hint, with it passes
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(tmp_path / "convmlp_s.onnx")])
    assert res.exit_code == 1 and "pass it with --weights" in res.output
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(tmp_path / "convmlp_s.onnx"), "--weights", str(ckpt)])
    assert res.exit_code == 0, res.output


def test_build_planning_reads_the_exported_graphs(exported):
    """What `build` reads before TensorRT is touched: names, precision, kind, strongly typed plan."""
    from deploy.modelfile import describe as inspect_onnx
    from deploy.modelfile.profiles import DEFAULT_PROFILE
    from deploy.trt.builder import BuildOptions, check_build_inputs, plan_build

    for name, precision, kind in (("convmlp_s.onnx", "fp32", "classifier"), ("convmlp_s.fp16.onnx", "fp16", "classifier"),
                                  ("convmlp_s.features.onnx", "fp32", "features")):
        info = inspect_onnx(exported / name)
        assert (info.precision, info.kind, info.variant, info.input_name) == (precision, kind, "s", "input")
        check_build_inputs(info, [DEFAULT_PROFILE])
        for major in (10, 11):
            plan = plan_build(BuildOptions(), graph_precision=info.precision, tensorrt_major=major)
            assert plan.precision == precision
            assert plan.network_flags == (("STRONGLY_TYPED",) if major == 10 else ())


def test_validate_with_real_photos(exported, tmp_path):
    from tests.photos import HELD_OUT_PHOTOS, make_photo_set

    make_photo_set(tmp_path / "photos", 6, sources=HELD_OUT_PHOTOS, size=(128, 96))
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(exported / "convmlp_s.onnx"), "--images",
                                        str(tmp_path / "photos"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    photos = [c for c in data["cases"] if c["photos"]]
    # at the recorded 224 (resized and cropped), then at their own 96x128 (normalised only)
    assert [(c["shape"], c["native"]) for c in photos] == [([6, 3, 224, 224], False), ([6, 3, 96, 128], True)]
    assert data["top1_agreement"] == 1.0 and data["native_top1_agreement"] == 1.0
    assert data["accuracy_gate_on"] == "synthetic grid"  # FP32: an exactness gate, on the grid
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(exported / "convmlp_s.onnx"), "--images", str(empty)])
    assert res.exit_code == 2 and "no image files" in res.output


def test_failed_export_leaves_only_the_rejected_graph_behind(tmp_path, monkeypatch):
    from deploy.compare import Tolerance

    monkeypatch.setattr(pipeline, "tolerance_for", lambda p: Tolerance(p, 0.0, True))
    out = tmp_path / "new" / "art"
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(out)])
    # the folders it created stay only to hold the graph that failed, for inspection; nothing else is written
    assert res.exit_code == 3 and [p.name for p in out.iterdir()] == ["rejected"]
    assert [p.name for p in (out / "rejected").iterdir()] == ["convmlp_s.onnx"]
    # a run that fails before any graph is made leaves no folder behind
    bad, empty = tmp_path / "other" / "art", tmp_path / "no_images"
    empty.mkdir()
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(bad), "--int8", "--calibration", str(empty)])
    assert res.exit_code == 2 and "no image" in res.output and not (tmp_path / "other").exists()


def test_reexport_lists_stale_graphs(exported, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    for name in ("convmlp_s.fp16.onnx", "convmlp_s.features.onnx"):
        (out / name).write_bytes((exported / name).read_bytes())
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "convmlp_s.report.json").read_text())
    assert sorted(Path(p).name for p in report["stale"]) == ["convmlp_s.features.onnx", "convmlp_s.fp16.onnx"]
    assert "convmlp_s.fp16.onnx is from an earlier export" in res.stderr
    assert (out / "convmlp_s.fp16.onnx").exists()  # listed, never deleted


def test_validate_synthetic_graph_with_weights_says_so_first(exported, make_checkpoint):
    ckpt = make_checkpoint("s", seed=3)
    res = CliRunner().invoke(cli.main, ["validate", "--onnx", str(exported / "convmlp_s.onnx"), "--weights", str(ckpt)])
    assert res.exit_code == 1 and "was exported from synthetic weights" in res.output
    assert "relative error" not in res.output and res.output.count("\n") == 1
