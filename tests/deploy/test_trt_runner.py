"""TensorRT runner on real engines (``gpu``: CUDA + TensorRT); without them only the refusals run here.

The runner's own logic on a fake TensorRT is tested in test_trt_runner_fake.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deploy.errors import BackendUnavailable, DeployError
from deploy.runners.tensorrt import Engine, TensorRTRunner
from deploy.trt.version import tensorrt_version


def _gpu_reason() -> str | None:
    import torch

    if tensorrt_version() is None:
        return "TensorRT is not installed (pip install 'convmlp-deploy[trt]' on a GPU machine)"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


GPU_REASON = _gpu_reason()
gpu = pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")


def test_engine_alias_and_inactive_use(tmp_path: Path) -> None:
    assert Engine is TensorRTRunner
    runner = TensorRTRunner(tmp_path / "missing.engine")
    with pytest.raises(DeployError, match="outside its 'with' block"):
        runner.infer(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.skipif(GPU_REASON is None, reason="TensorRT and CUDA are present")
def test_activate_without_tensorrt_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="convmlp-deploy\\[trt\\]|CUDA"):
        with TensorRTRunner(tmp_path / "m.engine"):
            pass


# ----------------------------------------------------------------------------- real engines


@pytest.fixture(scope="module")
def onnx32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """convmlp_s exported to ONNX (FP32), synthetic weights."""
    export_onnx = pytest.importorskip("export.onnx").export_onnx
    from convmlp.spec import io_spec
    from deploy.loader import reference_model

    folder = tmp_path_factory.mktemp("trt")
    return export_onnx(reference_model("s"), io_spec("s"), folder / "convmlp_s.onnx")


def _profiles() -> list:
    from deploy.modelfile.profiles import ShapeProfile

    return [
        ShapeProfile((1, 3, 64, 64), (2, 3, 128, 128), (4, 3, 160, 160)),
        ShapeProfile((1, 3, 160, 160), (2, 3, 224, 224), (2, 3, 288, 288)),
    ]


@pytest.fixture(scope="module")
def engines(onnx32: Path) -> dict[str, Path]:
    """convmlp_s built from the FP32 and FP16 graphs with two small profiles."""
    from deploy.trt.builder import build_engine

    profiles = _profiles()
    out = {"fp32": build_engine(onnx32, profiles).engine_path}
    to_fp16 = getattr(pytest.importorskip("export.fp16"), "to_fp16", None)
    if to_fp16 is not None:
        import onnx

        onnx16 = onnx32.with_name("convmlp_s.fp16.onnx")
        onnx.save(to_fp16(onnx.load(str(onnx32))), str(onnx16))
        out["fp16"] = build_engine(onnx16, profiles).engine_path
    return out


@pytest.fixture(scope="module")
def vc_engine(onnx32: Path) -> Path:
    """The FP32 graph built --version-compatible (the plan embeds the lean runtime: host code)."""
    from deploy.trt.builder import BuildOptions, build_engine

    result = build_engine(
        onnx32, _profiles(), BuildOptions(version_compatible=True), output=onnx32.with_name("convmlp_s.vc.engine")
    )
    assert result.manifest.version_compatible
    return result.engine_path


@gpu
@pytest.mark.gpu
def test_fp32_engine_matches_pytorch_on_every_profile(engines: dict[str, Path]) -> None:
    from deploy.modelfile.profiles import validation_shapes

    with TensorRTRunner(engines["fp32"]) as runner:
        assert runner.output_names == ["logits"] and len(runner.profiles) == 2
        report = _against_pytorch(runner, validation_shapes(runner.profiles), "fp32")
    assert report.passed, report.failures


@gpu
@pytest.mark.gpu
def test_fp16_engine_matches_pytorch(engines: dict[str, Path]) -> None:
    if "fp16" not in engines:
        pytest.skip("export.fp16.to_fp16 is not available")

    with TensorRTRunner(engines["fp16"]) as runner:
        assert runner.manifest is not None and runner.manifest.precision == "fp16"
        report = _against_pytorch(runner, [(1, 3, 97, 131), (2, 3, 224, 224)], "fp16")
    assert report.passed, report.failures


@gpu
@pytest.mark.gpu
def test_runner_reuses_buffers_switches_profiles_and_refuses_bad_input(engines: dict[str, Path]) -> None:
    import torch

    x_small = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    with TensorRTRunner(engines["fp32"]) as runner:
        a = runner.infer(x_small)["logits"]
        big = runner.infer(torch.from_numpy(np.zeros((2, 3, 288, 288), np.float32)).cuda())["logits"]
        assert big.shape == (2, 1000)
        b = runner.infer(torch.from_numpy(x_small))["logits"]  # back to profile 0, CPU tensor
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        with pytest.raises(DeployError, match="outside every optimization profile"):
            runner.infer(np.zeros((8, 3, 64, 64), np.float32))
        with pytest.raises(DeployError, match="3 channels"):
            runner.infer(np.zeros((1, 4, 64, 64), np.float32))
        with pytest.raises(DeployError, match="floating point"):
            runner.infer(np.zeros((1, 3, 64, 64), np.int32))


@gpu
@pytest.mark.gpu
def test_cuda_graph_replay_gives_the_same_result(engines: dict[str, Path]) -> None:
    x = np.random.default_rng(1).standard_normal((1, 3, 128, 128)).astype(np.float32)
    with TensorRTRunner(engines["fp32"]) as plain:
        ref = plain.infer(x)["logits"]
    with TensorRTRunner(engines["fp32"], cuda_graph=True) as graphed:
        first, second = graphed.infer(x)["logits"], graphed.infer(x * 1.0)["logits"]
    np.testing.assert_allclose(first, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second, ref, rtol=1e-5, atol=1e-5)


@gpu
@pytest.mark.gpu
def test_foreign_manifest_is_refused(engines: dict[str, Path], tmp_path: Path) -> None:
    import json
    import shutil

    from deploy.modelfile.engine import manifest_path

    engine = tmp_path / "copy.engine"
    shutil.copy(engines["fp32"], engine)
    data = json.loads(manifest_path(engines["fp32"]).read_text())
    data["gpu_name"], data["compute_capability"] = "Tesla T4", "7.5"
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(DeployError, match="not portable"):
        with TensorRTRunner(engine):
            pass
    with TensorRTRunner(engine, check_compat=False) as runner:  # the documented escape hatch
        assert runner.infer(np.zeros((1, 3, 64, 64), np.float32))["logits"].shape == (1, 1000)


@gpu
@pytest.mark.gpu
def test_cuda_graph_with_alternating_shapes_matches_pytorch_every_time(engines: dict[str, Path]) -> None:
    # both profiles, back and forth, repeats (graph captured and replayed) and single runs (plain enqueues);
    # every output is compared with PyTorch FP32 on its own input
    from deploy.compare import tolerance_for
    from deploy.loader import reference_model
    from deploy.reference import compare_runner, reference_cases

    a, b, c = (2, 3, 96, 96), (2, 3, 200, 224), (1, 3, 128, 160)
    sequence = [a, a, a, b, b, a, c, a, b, b, c, c, a, b, a, a]
    cases = reference_cases(reference_model("s"), sequence, output_names=["logits"], seed=7)
    with TensorRTRunner(engines["fp32"], cuda_graph=True, shapes="static") as runner:
        report = compare_runner(
            runner, cases, tolerance=tolerance_for("fp32"), model_label="convmlp_s", weights="synthetic"
        )
        assert runner.shape_stats()["graphs"] >= 1  # the last runs (a, a) captured and replayed one
    assert len(report.cases) == len(sequence)
    assert report.passed, report.failures


@gpu
@pytest.mark.gpu
def test_mixed_size_stream_with_graphs_per_size_matches_pytorch_at_the_fp16_gate(engines: dict[str, Path]) -> None:
    # random sizes inside both profiles plus a cycle of three, under the dynamic policy with CUDA graphs
    # (K=2, bound 2: graphs are captured, replayed, evicted and recaptured, the buffers grow midway);
    # every output is compared with PyTorch FP32 on its own input at the FP16 gate
    if "fp16" not in engines:
        pytest.skip("export.fp16.to_fp16 is not available")
    from deploy.compare import tolerance_for
    from deploy.loader import reference_model
    from deploy.reference import compare_runner, reference_cases
    from deploy.shapes import ShapePolicy

    rng = np.random.default_rng(3)
    cycle = [(2, 3, 96, 96), (1, 3, 200, 224), (1, 3, 128, 160)]
    sequence: list[tuple[int, int, int, int]] = []
    for i in range(36):
        if i % 2:
            sequence.append(cycle[(i // 2) % 3])
        elif i % 4 == 0:
            sequence.append((int(rng.integers(1, 5)), 3, int(rng.integers(64, 161)), int(rng.integers(64, 161))))
        else:
            sequence.append((int(rng.integers(1, 3)), 3, int(rng.integers(160, 289)), int(rng.integers(160, 289))))
    cases = reference_cases(reference_model("s"), sequence, output_names=["logits"], seed=11)
    policy = ShapePolicy(specialize_after=2, max_specialized=2, warmup=((1, 128, 160),))
    with TensorRTRunner(engines["fp16"], cuda_graph=True, shapes=policy) as runner:
        report = compare_runner(
            runner, cases, tolerance=tolerance_for("fp16"), model_label="convmlp_s", weights="synthetic"
        )
        stats = runner.shape_stats()
    assert len(report.cases) == len(sequence)
    assert report.passed, report.failures
    assert stats["profile_contexts"] == 2 and stats["captured"] >= 3 and stats["evicted"] >= 1, stats


@gpu
@pytest.mark.gpu
def test_version_compatible_engine_loads_from_its_sidecar(vc_engine: Path) -> None:

    with TensorRTRunner(vc_engine) as runner:
        assert runner.manifest is not None and runner.manifest.version_compatible
        report = _against_pytorch(runner, [(1, 3, 64, 64), (2, 3, 200, 200)], "fp32")
    assert report.passed, report.failures


@gpu
@pytest.mark.gpu
def test_version_compatible_plan_without_sidecar_needs_allow_host_code(vc_engine: Path, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare.engine"  # e.g. what trtexec --versionCompatible writes: no .json
    shutil.copy(vc_engine, bare)
    with pytest.raises(DeployError, match="allow_host_code=True"):
        with TensorRTRunner(bare, check_compat=False):
            pass
    x = np.random.default_rng(3).standard_normal((2, 3, 96, 96)).astype(np.float32)
    with TensorRTRunner(bare, check_compat=False, allow_host_code=True) as runner:
        got = runner.infer(x)["logits"]
    with TensorRTRunner(vc_engine) as runner:
        ref = runner.infer(x)["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def _tensorrt_headers() -> Path | None:
    roots = [os.environ.get("TENSORRT_ROOT", ""), "/usr/local/tensorrt", "/opt/tensorrt", "/usr"]
    for root in filter(None, roots):
        for sub in ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu"):
            if (Path(root) / sub / "NvInfer.h").is_file():
                return Path(root)
    return None


@pytest.fixture(scope="module")
def cpp_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/cpp built with CMake against the installed TensorRT and CUDA toolkit."""
    import shutil
    import subprocess

    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: cannot build the C++ sample")
    root = _tensorrt_headers()
    if root is None:
        pytest.skip("TensorRT C++ headers (NvInfer.h) not found: set TENSORRT_ROOT to a TensorRT tar install")
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    if shutil.which("nvcc") is None and not (Path(cuda_home) / "include" / "cuda_runtime_api.h").is_file():
        pytest.skip("CUDA toolkit (nvcc, cuda_runtime_api.h) not found: the C++ sample links CUDA::cudart")
    build = tmp_path_factory.mktemp("cpp_build")
    src = Path(__file__).resolve().parents[2] / "deploy" / "cpp"
    for cmd in (
        ["cmake", "-S", str(src), "-B", str(build), f"-DTENSORRT_ROOT={root}", "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", str(build), "-j"],
    ):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
    return build / "convmlp_trt"


@gpu
@pytest.mark.gpu
def test_cpp_sample_loads_the_version_compatible_engine(cpp_sample: Path, vc_engine: Path, tmp_path: Path) -> None:
    import re
    import shutil
    import subprocess

    import torch

    from deploy.loader import reference_model
    from deploy.modelfile.engine import manifest_path

    x = np.random.default_rng(5).standard_normal((2, 3, 96, 96)).astype(np.float32)
    (tmp_path / "input.bin").write_bytes(x.tobytes())
    with torch.no_grad():
        ref = reference_model("s")(torch.from_numpy(x)).numpy()
    env = dict(os.environ)
    root = _tensorrt_headers()
    if root is not None and (root / "lib").is_dir():
        env["LD_LIBRARY_PATH"] = f"{root / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cpp_sample), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)

    with_sidecar = run(vc_engine, 2, 3, 96, 96, tmp_path / "input.bin")  # the sidecar says version_compatible
    assert with_sidecar.returncode == 0, with_sidecar.stderr
    for b, line in enumerate(with_sidecar.stdout.strip().splitlines()):
        pairs = [(int(i), float(v)) for i, v in re.findall(r" (\d+) \((-?[\d.]+)\)", line)]
        assert pairs[0][0] == int(ref[b].argmax()), line
        assert {i for i, _ in pairs} == set(np.argsort(-ref[b])[:5].tolist()), line
        for i, v in pairs:
            assert abs(v - ref[b, i]) <= 1e-3 + 1e-3 * abs(ref[b, i]), (line, ref[b, i])

    bare = tmp_path / "bare.engine"
    shutil.copy(vc_engine, bare)
    assert not manifest_path(bare).exists()
    refused = run(bare, 2, 3, 96, 96, tmp_path / "input.bin")
    assert refused.returncode == 1 and "--allow-host-code" in refused.stderr
    allowed = run("--allow-host-code", bare, 2, 3, 96, 96, tmp_path / "input.bin")
    assert allowed.returncode == 0, allowed.stderr
    top5 = [re.findall(r" (\d+) \(", line) for line in with_sidecar.stdout.splitlines()]
    assert [re.findall(r" (\d+) \(", line) for line in allowed.stdout.splitlines()] == top5


def _against_pytorch(runner: TensorRTRunner, shapes, precision: str):
    """ConvMLP-S with synthetic weights (what the test engines are built from) against ``runner`` at
    ``precision``'s gate, on ``shapes``."""
    from deploy.compare import tolerance_for
    from deploy.loader import reference_model
    from deploy.reference import validate_runner

    return validate_runner(runner, reference_model("s"), shapes=shapes, tolerance=tolerance_for(precision),
                           model_label="convmlp_s", weights="synthetic")
