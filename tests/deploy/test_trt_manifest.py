"""The engine sidecar: round trip, atomic write, portability checks."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.errors import DeployError
from deploy.modelfile.engine import (
    EngineManifest,
    manifest_path,
    max_batch,
    read_manifest,
    write_manifest,
)
from deploy.modelfile.profiles import ShapeProfile
from deploy.trt.version import check_compatible

H100 = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_version": "10.13.0.35"}


def make_manifest(**kw: object) -> EngineManifest:
    base = EngineManifest(
        tensorrt_version="10.13.0.35",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        cuda_version="12.8",
        precision="fp16",
        kind="classifier",
        variant="s",
        num_classes=1000,
        input_name="input",
        output_names=["logits"],
        profiles=[
            ShapeProfile((1, 3, 64, 64), (2, 3, 128, 128), (4, 3, 256, 256)),
            ShapeProfile((8, 3, 224, 224), (16, 3, 224, 224), (24, 3, 512, 512)),
        ],
        onnx_sha256="ab" * 32,
        onnx_path="artifacts/convmlp_s.fp16.onnx",
        build_options={"opt_level": 3},
        tool_version="0.1.0",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_manifest_path_is_engine_plus_json() -> None:
    assert manifest_path("a/convmlp_s.fp16.engine") == Path("a/convmlp_s.fp16.engine.json")


def test_round_trip(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    m = make_manifest()
    written = write_manifest(m, engine)
    assert written == tmp_path / "m.engine.json"
    raw = json.loads(written.read_text())
    assert raw["format_version"] == 1
    assert raw["profiles"][1] == {"min": [8, 3, 224, 224], "opt": [16, 3, 224, 224], "max": [24, 3, 512, 512]}
    back = read_manifest(engine)
    assert back == m
    assert max_batch(back) == 24


def test_read_errors_are_clear(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(DeployError, match="sidecar manifest is missing"):
        read_manifest(engine)
    manifest_path(engine).write_text("{not json")
    with pytest.raises(DeployError, match="not a valid engine manifest"):
        read_manifest(engine)
    data = make_manifest().to_dict()
    data["format_version"] = 99
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(DeployError, match="format_version"):
        read_manifest(engine)
    data = make_manifest().to_dict()
    del data["gpu_name"]
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(DeployError, match="gpu_name"):
        read_manifest(engine)


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = tmp_path / "m.engine"
    write_manifest(make_manifest(), engine)
    before = manifest_path(engine).read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(make_manifest(variant="l"), engine)
    monkeypatch.undo()
    assert manifest_path(engine).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine.json"], "temp file left behind"


def test_compatible_on_the_same_gpu_and_version() -> None:
    check_compatible(make_manifest(), **H100)
    check_compatible(make_manifest(), **{**H100, "tensorrt_version": "10.13.0"})


def test_other_gpu_is_refused() -> None:
    with pytest.raises(DeployError, match="not portable across GPU models"):
        check_compatible(make_manifest(), **{**H100, "gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"})
    with pytest.raises(DeployError, match="NVIDIA L4"):
        check_compatible(make_manifest(), **{**H100, "gpu_name": "NVIDIA L4", "compute_capability": "8.9"})


def test_other_tensorrt_is_refused() -> None:
    with pytest.raises(DeployError, match="10.14.1"):
        check_compatible(make_manifest(), **{**H100, "tensorrt_version": "10.14.1"})


def test_hardware_compatible_exceptions() -> None:
    amp = make_manifest(hardware_compatibility="ampere+")
    check_compatible(amp, gpu_name="NVIDIA A10", compute_capability="8.6", tensorrt_version="10.13.0.35")
    with pytest.raises(DeployError, match="Ampere and newer"):
        check_compatible(amp, gpu_name="Tesla T4", compute_capability="7.5", tensorrt_version="10.13.0.35")
    same = make_manifest(hardware_compatibility="same-cc")
    check_compatible(same, gpu_name="NVIDIA H200", compute_capability="9.0", tensorrt_version="10.13.0.35")
    with pytest.raises(DeployError, match="compute capability 9.0"):
        check_compatible(same, gpu_name="NVIDIA A100", compute_capability="8.0", tensorrt_version="10.13.0.35")
    # hardware compatibility says nothing about TensorRT versions
    with pytest.raises(DeployError, match="TensorRT"):
        check_compatible(amp, gpu_name="NVIDIA A10", compute_capability="8.6", tensorrt_version="10.14.1")


def test_version_compatible_exceptions() -> None:
    vc = make_manifest(version_compatible=True)
    check_compatible(vc, **{**H100, "tensorrt_version": "10.16.1"})
    check_compatible(vc, **{**H100, "tensorrt_version": "11.0.0"})
    with pytest.raises(DeployError, match="version-compatible"):
        check_compatible(vc, **{**H100, "tensorrt_version": "10.12.0"})  # older runtime
    with pytest.raises(DeployError, match="version-compatible"):
        check_compatible(vc, **{**H100, "tensorrt_version": "12.0.0"})
    # version compatibility says nothing about GPUs
    with pytest.raises(DeployError, match="not portable"):
        check_compatible(vc, gpu_name="NVIDIA A100", compute_capability="8.0", tensorrt_version="10.16.1")
