"""TensorRT runner. Real engines need CUDA + TensorRT (``gpu``); here only the refusals run."""

from __future__ import annotations

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
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """convmlp_s exported (FP32 and FP16 graphs) and built with two small profiles."""
    export_onnx = pytest.importorskip("export.onnx").export_onnx
    from convmlp.spec import io_spec
    from deploy.trt.builder import build_engine
    from deploy.trt.profiles import ShapeProfile
    from deploy.validate import reference_model

    folder = tmp_path_factory.mktemp("trt")
    model = reference_model("s")
    onnx32 = export_onnx(model, io_spec("s"), folder / "convmlp_s.onnx")
    profiles = [
        ShapeProfile((1, 3, 64, 64), (2, 3, 128, 128), (4, 3, 160, 160)),
        ShapeProfile((1, 3, 160, 160), (2, 3, 224, 224), (2, 3, 288, 288)),
    ]
    out = {"fp32": build_engine(onnx32, profiles).engine_path}
    to_fp16 = getattr(pytest.importorskip("export.fp16"), "to_fp16", None)
    if to_fp16 is not None:
        import onnx

        onnx16 = folder / "convmlp_s.fp16.onnx"
        onnx.save(to_fp16(onnx.load(str(onnx32))), str(onnx16))
        out["fp16"] = build_engine(onnx16, profiles).engine_path
    return out


@gpu
@pytest.mark.gpu
def test_fp32_engine_matches_pytorch_on_every_profile(engines: dict[str, Path]) -> None:
    from deploy.compare import tolerance_for
    from deploy.trt.profiles import validation_shapes
    from deploy.validate import reference_model, validate_runner

    with TensorRTRunner(engines["fp32"]) as runner:
        assert runner.output_names == ["logits"] and len(runner.profiles) == 2
        report = validate_runner(
            runner, reference_model("s"), shapes=validation_shapes(runner.profiles),
            tolerance=tolerance_for("fp32"), model_label="convmlp_s", weights="synthetic",
        )
    assert report.passed, report.failures


@gpu
@pytest.mark.gpu
def test_fp16_engine_matches_pytorch(engines: dict[str, Path]) -> None:
    if "fp16" not in engines:
        pytest.skip("export.fp16.to_fp16 is not available")
    from deploy.compare import tolerance_for
    from deploy.validate import reference_model, validate_runner

    with TensorRTRunner(engines["fp16"]) as runner:
        assert runner.manifest is not None and runner.manifest.precision == "fp16"
        report = validate_runner(
            runner, reference_model("s"), shapes=[(1, 3, 97, 131), (2, 3, 224, 224)],
            tolerance=tolerance_for("fp16"), model_label="convmlp_s", weights="synthetic",
        )
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

    from deploy.trt.manifest import manifest_path

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
