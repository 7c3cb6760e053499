"""``convmlp_ov``, the C++ sample on OpenVINO, built with CMake from the SDK inside the ``openvino`` wheel
and checked against PyTorch FP32: the first C++ that runs ConvMLP here.

The build runs once per test session into a temporary folder; without cmake, a C++ compiler or the wheel's
SDK (``openvino/cmake/OpenVINOConfig.cmake``) the tests skip, saying which is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deploy.compare import BF16_TOLERANCE, FP32_TOLERANCE, compare_outputs
from deploy.loader import reference_model
from deploy.reference import sample_images
from export.onnx import set_metadata

CPP = Path(__file__).resolve().parents[2] / "deploy" / "cpp"


def _sdk() -> Path | None:
    try:
        import openvino
    except ImportError:
        return None
    cmake = Path(openvino.__file__).parent / "cmake"
    return cmake if (cmake / "OpenVINOConfig.cmake").is_file() else None


@pytest.fixture(scope="session")
def convmlp_ov(tmp_path_factory) -> Path:
    """``cmake -S deploy/cpp -DOpenVINO_DIR=<wheel>/cmake`` and build, as README says."""
    missing = [what for what, ok in (("cmake", shutil.which("cmake")), ("a C++ compiler", shutil.which("c++")
                                                                        or shutil.which("g++")),
                                     ("the openvino wheel's C++ SDK", _sdk())) if not ok]
    if missing:
        pytest.skip(f"cannot build convmlp_ov: no {', no '.join(missing)}")
    build = tmp_path_factory.mktemp("cpp-ov")
    for cmd in (["cmake", "-S", str(CPP), "-B", str(build), f"-DOpenVINO_DIR={_sdk()}"],
                ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exe = build / "convmlp_ov"
    assert exe.is_file()
    return exe


@pytest.fixture(scope="module")
def graphs(s_graph_pair, tmp_path_factory) -> dict[str, Path]:
    """The S graph (FP32, synthetic weights) and its IR, as export --openvino writes it."""
    from export.openvino import write_ir

    onnx_path = s_graph_pair["fp32"]
    folder = tmp_path_factory.mktemp("ov-ir")
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    xml = write_ir(onnx_path.read_bytes(), folder / "convmlp_s.openvino.xml", meta)
    return {"onnx": onnx_path, "ir": xml}


@pytest.fixture(scope="module")
def torch_s():
    return reference_model("s")


def _run(exe: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def _reference(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("kind", ["onnx", "ir"])
@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (3, 3, 97, 131), (2, 3, 320, 256)])
def test_logits_match_pytorch_at_the_fp32_gate(convmlp_ov, graphs, torch_s, tmp_path, kind, shape):
    x = sample_images(shape, 7)
    (tmp_path / "in.bin").write_bytes(x.tobytes())
    res = _run(convmlp_ov, graphs[kind], *shape, tmp_path / "in.bin", "--output", tmp_path / "out.bin",
               "--precision", "f32")
    assert res.returncode == 0, res.stderr
    assert "[CPU, f32]" in res.stderr  # the precision OpenVINO compiled with, read back
    y = np.fromfile(tmp_path / "out.bin", np.float32).reshape(shape[0], -1)
    result = compare_outputs(shape, {"logits": _reference(torch_s, x)}, {"logits": y}, FP32_TOLERANCE)
    assert result.passed, result.failures
    top1 = [int(line.split(":")[1].split()[0]) for line in res.stdout.splitlines()]
    assert top1 == list(np.argmax(y, axis=1))


def test_bf16_at_the_bf16_gate_where_the_cpu_has_it(convmlp_ov, graphs, torch_s, tmp_path):
    from deploy.runners.openvino import cpu_capabilities

    x = sample_images((2, 3, 224, 224), 3)
    (tmp_path / "in.bin").write_bytes(x.tobytes())
    res = _run(convmlp_ov, graphs["onnx"], 2, 3, 224, 224, tmp_path / "in.bin", "--output", tmp_path / "out.bin",
               "--precision", "bf16")
    if "BF16" not in cpu_capabilities():
        assert res.returncode == 2 and "no native BF16" in res.stderr and res.stderr.count("\n") == 1
        pytest.skip("this CPU has no BF16 for OpenVINO: checked that bf16 is refused in one line")
    assert res.returncode == 0 and "[CPU, bf16]" in res.stderr, res.stderr
    y = np.fromfile(tmp_path / "out.bin", np.float32).reshape(2, -1)
    result = compare_outputs((2, 3, 224, 224), {"logits": _reference(torch_s, x)}, {"logits": y}, BF16_TOLERANCE)
    assert result.passed, result.failures


def test_one_model_serves_four_threads(convmlp_ov, graphs, torch_s, tmp_path):
    """4 threads x 10 inferences on one model, each thread its own input: every repeat equals the thread's
    first result (checked by the sample) and every result matches PyTorch on that thread's input."""
    xs = [sample_images((1, 3, 96, 128), 20 + k) for k in range(4)]
    (tmp_path / "in.bin").write_bytes(np.concatenate(xs).tobytes())
    res = _run(convmlp_ov, graphs["onnx"], 1, 3, 96, 128, tmp_path / "in.bin", "--parallel", 4, "--repeat", 10,
               "--threads", 1, "--output", tmp_path / "out.bin", "--precision", "f32")
    assert res.returncode == 0, res.stderr
    ys = np.fromfile(tmp_path / "out.bin", np.float32).reshape(4, -1)
    for k, x in enumerate(xs):
        ref = _reference(torch_s, x)
        assert np.linalg.norm(ys[k] - ref[0]) / np.linalg.norm(ref) < FP32_TOLERANCE.max_rel_l2


def test_preprocessing_is_read_from_the_models_metadata(convmlp_ov, graphs, tmp_path):
    proto = onnx.load(str(graphs["onnx"]))
    set_metadata(proto, {"mean": "[0.5, 0.25, 0.125]", "std": "[0.5, 0.5, 0.5]", "crop_pct": "0.9",
                         "input_size": "[3, 48, 80]"})
    onnx.save(proto, str(tmp_path / "m.onnx"))
    res = _run(convmlp_ov, tmp_path / "m.onnx", 1, 3, 64, 64)
    assert res.returncode == 0, res.stderr
    assert "preprocessing: mean [0.5, 0.25, 0.125] std [0.5, 0.5, 0.5] crop_pct 0.9 size 48x80" in res.stderr
    res = _run(convmlp_ov, graphs["ir"], 1, 3, 64, 64)
    assert "(ImageNet default)" in res.stderr  # the fixture's graph records no mean/std: said so


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("{missing}", 1, 3, 64, 64), 1, "model not found"),
        (("{junk}", 1, 3, 64, 64), 1, "not a readable ONNX model"),
        (("{lone}", 1, 3, 64, 64), 1, "is missing (an IR is the .xml and the .bin together)"),
        (("{onnx}", 1, 3, 64, 64, "{short}"), 2, "float32 values"),
        (("{missing}", 1, 3, 64, 64, "{short}"), 2, "float32 values"),  # the input is checked before the model
        (("{onnx}", 99999999999, 3, 224, 224), 2, "memory available"),
        (("{onnx}", 1, 3, 100000, 100000), 2, "memory available"),
        (("{onnx}", 0, 3, 64, 64), 2, "N must be a positive integer"),
        (("{onnx}", 1, "x", 64, 64), 2, "C must be a positive integer"),
        (("{onnx}", 1, 4, 64, 64), 2, "C must be 3"),
        (("{onnx}", 1, 3, 16, 64), 2, "H and W must be >= 32"),
        (("{onnx}", 1, 3, 64, 64, "--output", "/proc/none/out.bin"), 2, "cannot write there"),
        (("{onnx}", 1, 3, 64, 64, "--precision", "int4"), 2, "--precision must be f32 or bf16"),
        (("{onnx}", 1, 3, 64, 64, "--frobnicate"), 2, "unknown option --frobnicate"),
        (("{notamodel}", 1, 3, 64, 64), 2, "give an ONNX graph (.onnx) or an OpenVINO IR"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(convmlp_ov, graphs, tmp_path, args, code, message):
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    shutil.copyfile(graphs["ir"], tmp_path / "lone.xml")
    (tmp_path / "short.bin").write_bytes(b"\x00" * 12)
    (tmp_path / "model.txt").write_text("not a model")
    names = {"missing": tmp_path / "none.onnx", "junk": tmp_path / "junk.onnx", "lone": tmp_path / "lone.xml",
             "onnx": graphs["onnx"], "short": tmp_path / "short.bin", "notamodel": tmp_path / "model.txt"}
    res = _run(convmlp_ov, *(str(a).format(**names) for a in args))
    assert res.returncode == code, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert all(ln.startswith(("error:", "preprocessing:")) or " on OpenVINO " in ln for ln in res.stderr.splitlines())
