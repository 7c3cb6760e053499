"""The C++ sample follows the same I/O contract as everything else (convmlp/spec.py).

Without TensorRT this checks the source (tensor names, the calls of the documented flow,
the CMake wiring) and, where a C++ compiler exists, compiles convmlp_trt.cpp (the TensorRT backend,
tensorrt_model.h, behind the samples' one interface, convmlp.h) with -Werror against
FAKE TensorRT/CUDA headers (tests/deploy/fake_trt_headers: NVIDIA's signatures for the calls
the sample makes, a CPU implementation) and runs it: the sample's own logic (arguments,
reading the sidecar, when host code is allowed, profile choice, top-5). The build against the
real TensorRT is the ``gpu`` test in test_trt_runner.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from convmlp.spec import io_spec
from deploy.modelfile.engine import EngineManifest, manifest_path, write_manifest
from deploy.modelfile.profiles import ShapeProfile

CPP = Path(__file__).resolve().parents[2] / "deploy" / "cpp"
FAKE_HEADERS = Path(__file__).resolve().parent / "fake_trt_headers"


def _constant(source: str, name: str) -> str:
    m = re.search(rf'constexpr const char\* {name} = "([^"]+)";', source)
    assert m, f"{name} not found in tensorrt_model.h"
    return m.group(1)


def test_tensor_names_come_from_the_spec() -> None:
    source = (CPP / "tensorrt_model.h").read_text()
    spec = io_spec("s")
    assert _constant(source, "kInputName") == spec.input_names[0]
    assert _constant(source, "kOutputName") == spec.output_names[0]
    # no other string literal spells a tensor name: every use goes through the constants
    for name in (spec.input_names[0], spec.output_names[0]):
        assert source.count(f'"{name}"') == 1


def test_sample_uses_the_name_based_dynamic_shape_flow() -> None:
    source = (CPP / "tensorrt_model.h").read_text()
    for call in (
        "deserializeCudaEngine", "createExecutionContext", "setOptimizationProfileAsync",
        "setInputShape", "setTensorAddress", "enqueueV3", "getProfileShape", "setEngineHostCodeAllowed",
    ):
        assert f"{call}(" in source, call
    for gone in ("enqueueV2", "getBindingIndex", "setBindingDimensions"):  # removed in TensorRT 10
        assert gone not in source


def test_cmake_finds_tensorrt_and_cudart() -> None:
    cmake = (CPP / "CMakeLists.txt").read_text()
    assert "TENSORRT_ROOT" in cmake and "NvInfer.h" in cmake and "nvinfer" in cmake
    assert "CUDA::cudart" in cmake and "convmlp_trt.cpp" in cmake


def test_host_code_is_allowed_only_for_version_compatible_plans() -> None:
    source = (CPP / "tensorrt_model.h").read_text()
    code = "\n".join(line.split("//")[0] for line in source.splitlines())
    # one call, guarded by the decision (sidecar or flag), never unconditional
    assert code.count("setEngineHostCodeAllowed(") == 1
    assert "if (allow_host_code) runtime_->setEngineHostCodeAllowed(true);" in source
    assert "SidecarStatus::kVersionCompatible) allow_host_code = true;" in source


# ----------------------------------------------------------------------------- compiled against fakes


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """convmlp_trt.cpp compiled (-Wall -Wextra -Wpedantic -Werror) against the FAKE TensorRT/CUDA headers."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++ or clang++) to build the sample against the fake headers")
    exe = tmp_path_factory.mktemp("cpp") / "convmlp_trt_fake"
    cmd = [cxx, "-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I", str(FAKE_HEADERS), "-I", str(CPP),
           str(CPP / "convmlp_trt.cpp"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    return exe


def _plan(folder: Path, name: str, *, host_code: bool) -> Path:
    path = folder / name
    path.write_text(f"FAKEPLAN host_code={int(host_code)} min=1x3x32x32 max=4x3x256x256")
    return path


def _sidecar(plan: Path, *, version_compatible: bool, build_options: dict | None = None) -> Path:
    """A real sidecar, written by write_manifest as `convmlp-deploy build` does."""
    manifest = EngineManifest(
        tensorrt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        cuda_version="12.8", precision="fp16", kind="classifier", variant="s", num_classes=10,
        input_name="input", output_names=["logits"],
        profiles=[ShapeProfile((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 256, 256))],
        onnx_sha256="0" * 64, onnx_path="s.onnx", version_compatible=version_compatible,
        build_options=build_options if build_options is not None else {"version_compatible": version_compatible},
    )
    return write_manifest(manifest, plan)


def _run(exe: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=60)


def _allowed(res: subprocess.CompletedProcess[str]) -> int:
    m = re.search(r"host code allowed=(\d)", res.stderr)
    assert m, res.stderr
    return int(m.group(1))


@pytest.mark.parametrize(
    ("host_code", "sidecar", "flag", "allowed", "loads"),
    [
        (True, True, False, 1, True),  # version-compatible plan, its sidecar says so
        (True, None, True, 1, True),  # no sidecar: the caller's flag
        (True, None, False, 0, False),  # no sidecar, no flag: refused, with the hint
        (True, False, False, 0, False),  # sidecar says not version-compatible
        (False, False, False, 0, True),  # a plain plan never allows host code
        (False, None, False, 0, True),
    ],
)
def test_sample_allows_host_code_from_sidecar_or_flag(
    sample: Path, tmp_path: Path, host_code: bool, sidecar: bool | None, flag: bool, allowed: int, loads: bool
) -> None:
    plan = _plan(tmp_path, "m.engine", host_code=host_code)
    if sidecar is not None:
        _sidecar(plan, version_compatible=sidecar)
    res = _run(sample, *(["--allow-host-code"] if flag else []), plan, 2, 3, 64, 64)
    assert _allowed(res) == allowed
    if loads:
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("top-5:") == 2
    else:
        assert res.returncode == 1
        assert "cannot load the plan" in res.stderr and "--allow-host-code" in res.stderr


def test_only_the_top_level_flag_counts(sample: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "m.engine", host_code=True)
    _sidecar(plan, version_compatible=False, build_options={"version_compatible": True})
    res = _run(sample, plan, 1, 3, 64, 64)
    assert _allowed(res) == 0 and res.returncode == 1


@pytest.mark.parametrize(
    "text",
    ['{"version_compatible": "yes"}', '{"version_compatible": true', "[]", '{"a": 1} trailing', ""],
)
def test_unreadable_sidecar_is_an_error(sample: Path, tmp_path: Path, text: str) -> None:
    plan = _plan(tmp_path, "m.engine", host_code=True)
    manifest_path(plan).write_text(text)
    res = _run(sample, plan, 1, 3, 64, 64)
    assert res.returncode == 1
    assert "cannot read the sidecar" in res.stderr and "host code allowed" not in res.stderr


def test_sample_prints_the_top5_of_its_input(sample: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "m.engine", host_code=False)
    x = np.random.default_rng(0).standard_normal((3, 3, 40, 72)).astype(np.float32)
    (tmp_path / "input.bin").write_bytes(x.tobytes())
    res = _run(sample, plan, 3, 3, 40, 72, tmp_path / "input.bin")
    assert res.returncode == 0, res.stderr
    logits = x.reshape(3, -1)[:, :10]  # what the fake engine outputs
    for b, line in enumerate(res.stdout.strip().splitlines()):
        printed = [int(i) for i in re.findall(r" (\d+) \(", line.split(":", 1)[1])]
        assert printed == list(np.argsort(-logits[b])[:5]), line


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 2, "usage"),
        (("--allow-host-code",), 2, "usage"),
        ((2, 3, 16, 64), 2, "H and W must be >= 32"),
        ((2, 4, 64, 64), 2, "C must be 3"),
        ((0, 3, 64, 64), 2, "N must be a positive integer"),
        ((8, 3, 64, 64), 2, "outside every optimization profile"),
        ((1, 3, 64, 64, "missing.bin"), 1, "cannot open"),
        ((1, 3, 64, 64, "--output", "/proc/none/x.bin"), 2, "--output /proc/none/x.bin: cannot write there"),
    ],
)
def test_sample_refuses_bad_arguments(sample: Path, tmp_path: Path, args: tuple, code: int, message: str) -> None:
    plan = _plan(tmp_path, "m.engine", host_code=False)
    res = _run(sample, *((plan, *args) if args and args[0] != "--allow-host-code" else args))
    assert res.returncode == code and message in res.stderr, res.stderr


def test_sample_writes_its_logits_and_reads_preprocessing_from_the_sidecar(sample: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "m.engine", host_code=False)
    manifest = EngineManifest(
        tensorrt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", cuda_version="12.8",
        precision="fp16", kind="classifier", variant="s", num_classes=10, input_name="input", output_names=["logits"],
        profiles=[ShapeProfile((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 256, 256))], onnx_sha256="0" * 64,
        onnx_path="s.onnx", metadata={"mean": "[0.5, 0.25, 0.125]", "std": "[0.5, 0.5, 0.5]", "crop_pct": "0.9",
                                      "weights": "ck.pth", "nested": "{\"a\": 1}"},
    )
    write_manifest(manifest, plan)
    x = np.random.default_rng(1).standard_normal((2, 3, 48, 64)).astype(np.float32)
    (tmp_path / "input.bin").write_bytes(x.tobytes())
    res = _run(sample, plan, 2, 3, 48, 64, tmp_path / "input.bin", "--output", tmp_path / "out.bin")
    assert res.returncode == 0, res.stderr
    assert "preprocessing: mean [0.5, 0.25, 0.125] std [0.5, 0.5, 0.5] crop_pct 0.9" in res.stderr
    out = np.fromfile(tmp_path / "out.bin", np.float32).reshape(2, 10)
    assert np.array_equal(out, x.reshape(2, -1)[:, :10])  # what the fake engine computes
    plain = _plan(tmp_path, "p.engine", host_code=False)
    res = _run(sample, plain, 1, 3, 64, 64)
    assert "(ImageNet default)" in res.stderr  # no sidecar: the variant's config, said so


def test_sample_serves_several_threads_on_one_engine(sample: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "m.engine", host_code=False)
    x = np.random.default_rng(2).standard_normal((4 * 2, 3, 40, 40)).astype(np.float32)  # 4 threads x batch 2
    (tmp_path / "input.bin").write_bytes(x.tobytes())
    res = _run(sample, plan, 2, 3, 40, 40, tmp_path / "input.bin", "--parallel", 4, "--repeat", 5,
               "--output", tmp_path / "out.bin")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.fromfile(tmp_path / "out.bin", np.float32).reshape(8, 10), x.reshape(8, -1)[:, :10])
