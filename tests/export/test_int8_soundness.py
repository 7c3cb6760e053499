"""Reduced precision you can trust: sound Q/DQ scales, the TensorRT-layout INT8 IR, calibration sets that
say what they hold, and exports that leave nothing behind (issue: reduced precision you can trust)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

import cli
from export import int8 as int8_mod
from export import pipeline
from export.int8 import MIN_SCALE, calibration_set, clamp_scales
from tests.conftest import trained_like
from tests.photos import CALIBRATION_PHOTOS, make_photo_set

ROOT = Path(__file__).resolve().parents[2]


def run(*args: object):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def _truncated(path: Path, source: Path) -> Path:
    path.write_bytes(source.read_bytes()[:200])
    return path


# --------------------------------------------------------------------------- sound scales


@pytest.fixture(scope="module")
def odd_channels(tmp_path_factory) -> dict[str, Path]:
    """ConvMLP-S with a dead linear output channel, a dead conv output channel and a channel scaled by 1e-6,
    exported to INT8 (TensorRT layout) and to its IR."""
    root = tmp_path_factory.mktemp("odd")
    model = trained_like("s", seed=2)
    state = model.state_dict()
    state["stages.0.blocks.0.channel_mlp1.fc1.weight"][5] = 0.0
    state["conv_stages.conv_blocks.0.3.weight"][7] = 0.0
    state["stages.1.blocks.0.channel_mlp1.fc1.weight"][3] *= 1e-6
    ck = root / "odd.pth"
    torch.save(state, ck)
    # 16 calibrate, 32 are held out. A random-weight model has near-tied logits, so with 12 held-out images
    # top-1 agreement was too coarse a gate (one flip is 8%); 32 measured ORT INT8 87.5%, the 7-bit IR 65.6%.
    photos = make_photo_set(root / "cal", 48, sources=CALIBRATION_PHOTOS, size=(128, 128))
    res = run("export", "-v", "s", "--weights", ck, "--int8", "--calibration", photos[0].parent,
              "--calibration-count", "16", "--openvino", "-o", root / "out")
    assert res.exit_code == 0, res.output
    return {"out": root / "out", "checkpoint": ck, "log": res.output}


def test_every_scale_is_a_normal_positive_fp16_and_the_clamps_are_counted(odd_channels):
    proto = onnx.load(str(odd_channels["out"] / "convmlp_s.int8.onnx"))
    inits = {t.name: t for t in proto.graph.initializer}
    scales = {n.input[1] for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    values = np.concatenate([numpy_helper.to_array(inits[s]).astype(np.float64).ravel() for s in scales])
    assert np.isfinite(values).all() and values.min() >= MIN_SCALE
    assert all(inits[s].data_type == onnx.TensorProto.FLOAT16 for s in scales)
    report = json.loads((odd_channels["out"] / "convmlp_s.report.json").read_text())
    assert report["int8"]["clamped_scales"] >= 1 and report["int8"]["min_scale"] == MIN_SCALE
    assert "raised to the minimum" in odd_channels["log"]


def test_clamping_requantizes_the_weights_it_touches():
    q = numpy_helper.from_array(np.array([[100, -50], [127, 3], [0, 0]], np.int8), "w")
    s = numpy_helper.from_array(np.array([1e-6, 0.5, 0.0], np.float16), "s")  # subnormal, fine, dead
    z = numpy_helper.from_array(np.zeros(3, np.int8), "z")
    node = onnx.helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"], axis=0)
    graph = onnx.helper.make_graph([node], "g", [], [onnx.helper.make_tensor_value_info("wd", 10, [3, 2])], [q, s, z])
    proto = onnx.helper.make_model(graph)
    before = numpy_helper.to_array(q).astype(np.float64) * numpy_helper.to_array(s).astype(np.float64)[:, None]
    assert clamp_scales(proto) == 2
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert inits["s"].astype(np.float64).min() >= MIN_SCALE and inits["s"][1] == np.float16(0.5)
    after = inits["w"].astype(np.float64) * inits["s"].astype(np.float64)[:, None]
    assert np.abs(after - before).max() <= MIN_SCALE / 2  # the same weights, to the new step
    assert (inits["w"][1] == [127, 3]).all()  # untouched channel


def test_tensorrt_layout_int8_ir_is_written_and_validated(odd_channels):
    from deploy.modelfile import describe

    xml = odd_channels["out"] / "convmlp_s.int8.openvino.xml"
    facts = describe(xml)
    assert facts.precision == "int8" and facts.metadata["ir_float"].startswith("fp32")
    report = json.loads((odd_channels["out"] / "convmlp_s.report.json").read_text())
    assert report["graphs"]["int8.openvino"]["validation"]["passed"]
    # without VNNI, OpenVINO's u8s8 kernels saturate on 8-bit weights: the IR's go to 7 bits, the ONNX graph's not
    onnx_meta = {p.key: p.value for p in onnx.load(str(odd_channels["out"] / "convmlp_s.int8.onnx")).metadata_props}
    assert onnx_meta["int8_weight_bits"] == "8"
    assert facts.metadata["int8_weight_bits"] == ("8" if int8_mod.vnni() else "7")
    assert ("re-quantized to 7 bits for OpenVINO" in odd_channels["log"]) == (not int8_mod.vnni())


def _one_weight_graph() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, (4, 3)).astype(np.int8)
    s = np.array([0.5, 0.25, 2.0**-14, 1.0], np.float16)
    w = numpy_helper.from_array(q, "w")
    scale = numpy_helper.from_array(s, "s")
    z = numpy_helper.from_array(np.zeros(4, np.int8), "z")
    node = onnx.helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"], axis=0)
    graph = onnx.helper.make_graph([node], "g", [], [onnx.helper.make_tensor_value_info("wd", 10, [4, 3])],
                                   [w, scale, z])
    return onnx.helper.make_model(graph), q, s


def test_7bit_weights_dequantize_to_the_same_weights_at_twice_the_step():
    from export.int8 import to_7bit_weights

    proto, q, s = _one_weight_graph()
    assert to_7bit_weights(proto) == 1
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert inits["w"].dtype == np.int8 and np.abs(inits["w"].astype(int)).max() <= 64
    assert inits["s"].dtype == np.float16 and np.array_equal(inits["s"].astype(np.float64), 2 * s.astype(np.float64))
    before = q.astype(np.float64) * s.astype(np.float64)[:, None]
    after = inits["w"].astype(np.float64) * inits["s"].astype(np.float64)[:, None]
    assert (np.abs(after - before) <= s.astype(np.float64)[:, None] + 1e-12).all()  # at most half the new step


def test_openvino_gets_7bit_weights_only_for_the_tensorrt_layout_on_a_cpu_without_vnni(monkeypatch):
    proto, q, _ = _one_weight_graph()
    graph = proto.SerializeToString()
    assert int8_mod.for_openvino(graph, "cpu") == (graph, 0)  # quantized for this CPU already
    monkeypatch.setattr(int8_mod, "vnni", lambda: True)
    assert int8_mod.for_openvino(graph, "tensorrt") == (graph, 0)
    monkeypatch.setattr(int8_mod, "vnni", lambda: False)
    out, count = int8_mod.for_openvino(graph, "tensorrt")
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(out).graph.initializer}["w"]
    assert count == 1 and np.array_equal(weights, np.clip(np.round(q / 2), -64, 64).astype(np.int8))


def test_7bit_weights_refuse_int32_biases():
    from export.errors import ExportError
    from export.int8 import to_7bit_weights

    b = numpy_helper.from_array(np.array([5, -3], np.int32), "b")
    s = numpy_helper.from_array(np.array([0.1, 0.1], np.float32), "s")
    node = onnx.helper.make_node("DequantizeLinear", ["b", "s"], ["bd"], axis=0)
    graph = onnx.helper.make_graph([node], "g", [], [onnx.helper.make_tensor_value_info("bd", 1, [2])], [b, s])
    with pytest.raises(ExportError, match="reduce_range"):
        to_7bit_weights(onnx.helper.make_model(graph))


# --------------------------------------------------------------------------- calibration sets


def test_unreadable_images_are_counted_and_named_once(tmp_path):
    good = make_photo_set(tmp_path / "cal", 2, sources=CALIBRATION_PHOTOS, size=(64, 64))
    bad = [_truncated(tmp_path / "cal" / f"trunc{i}.png", good[0]) for i in range(2)]
    cal = calibration_set(tmp_path / "cal", 512, "minmax")
    assert sorted(cal.files + cal.held_out) == sorted(good) and cal.found == 4
    assert len(cal.skipped) == 2 and all(line.count(str(b)) == 1 for line, b in zip(sorted(cal.skipped), bad, strict=True))


def test_a_small_folder_still_holds_photographs_out(tmp_path):
    make_photo_set(tmp_path / "cal", 12, sources=CALIBRATION_PHOTOS, size=(64, 64))
    cal = calibration_set(tmp_path / "cal", 512, "minmax")
    assert (len(cal.files), len(cal.held_out)) == (10, 2)
    assert not set(cal.files) & set(cal.held_out)
    one = calibration_set(make_photo_set(tmp_path / "one", 1, size=(64, 64))[0].parent, 512, "minmax")
    assert (len(one.files), len(one.held_out)) == (1, 0)


def test_a_folder_of_unreadable_images_is_refused_before_any_work(tmp_path, monkeypatch):
    for i in range(5):
        (tmp_path / "cal").mkdir(exist_ok=True)
        (tmp_path / "cal" / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")

    def never(*a, **k):
        raise AssertionError("export work started")

    monkeypatch.setattr(pipeline, "export_onnx_proto", never)
    res = run("export", "-v", "s", "--int8", "--calibration", tmp_path / "cal", "-o", tmp_path / "o")
    assert res.exit_code == 2 and "none of its 5 images can be read" in res.output
    assert sum(f"broken{i}.jpg" in res.output for i in range(5)) == 3  # the first few, named
    assert "(and 2 more)" in res.output and res.output.strip().count("\n") == 0


def test_quantizer_failures_are_reported_as_they_are_and_the_callers_graph_is_kept(tmp_path, monkeypatch):
    from export.errors import ExportError
    from tests.deploy.test_trt_builder import tiny_onnx

    proto = onnx.load(str(tiny_onnx(tmp_path / "t.onnx")))
    before = proto.SerializeToString()
    batches = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(3)]
    graph, facts = int8_mod.quantize_int8(proto, iter(batches), layout="cpu")
    assert proto.SerializeToString() == before and facts["calibration_batches"] == 3
    int8_mod.quantize_int8(proto, iter(batches), layout="cpu")  # a second call on the same graph works

    import onnxruntime.quantization as ortq

    def broken(*a, **k):
        raise ValueError("the real reason\nwith a traceback line")

    monkeypatch.setattr(ortq, "quantize_static", broken)
    with pytest.raises(ExportError, match="INT8 quantization failed: the real reason$"):
        int8_mod.quantize_int8(proto, iter(batches), layout="cpu")


def test_validate_images_that_cannot_be_read_name_the_option(s_graph_pair, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.jpg").write_bytes(b"junk")
    res = run("validate", "--onnx", s_graph_pair["fp32"], "--images", tmp_path / "imgs")
    assert res.exit_code == 1 and f"none of the images in --images {tmp_path / 'imgs'} could be read" in res.output


# --------------------------------------------------------------------------- clean exports


def test_a_second_export_into_a_locked_folder_is_one_line(tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = run("export", "-v", "s", "-o", out)
    finally:
        os.close(fd)
    assert res.exit_code == 1 and "another export is writing into" in res.output
    assert not list(out.iterdir())


def test_temp_files_of_an_interrupted_export_are_removed_and_named(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".convmlp_s.onnx.k3x9.tmp").write_bytes(b"half a graph")
    (out / ".convmlp_s.openvino.xml.q1.tmp").mkdir()
    (out / ".convmlp_s.openvino.xml.q1.tmp" / "convmlp_s.openvino.bin").write_bytes(b"x")
    (out / "notes.txt").write_text("the user's own file")
    res = run("export", "-v", "s", "-o", out)
    assert res.exit_code == 0, res.output
    assert "removed" in res.stderr and ".convmlp_s.onnx.k3x9.tmp" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["convmlp_s.onnx", "convmlp_s.report.json", "notes.txt"]


@pytest.mark.slow
def test_sigterm_during_calibration_leaves_nothing_behind(tmp_path):
    import tempfile

    photos = make_photo_set(tmp_path / "cal", 40, sources=CALIBRATION_PHOTOS, size=(224, 224))
    out = tmp_path / "out"
    tmp = Path(tempfile.gettempdir())
    before = {p.name for p in tmp.iterdir() if p.name.startswith(("convmlp-int8-", "ort.quant."))}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import cli; cli.main()", "export", "-v", "s", "--int8", "--calibration",
         str(photos[0].parent), "--calibration-count", "40", "-o", str(out)],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.startswith("calibrating: ") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (list(out.glob(".*.tmp")) if out.exists() else [])
    after = {p.name for p in tmp.iterdir() if p.name.startswith(("convmlp-int8-", "ort.quant."))}
    assert after <= before
