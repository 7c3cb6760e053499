"""Shared fixtures: trained-looking models and checkpoints in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convmlp import create_model
from convmlp.weights import synthesize_weights


def trained_like(variant: str = "s", seed: int = 0, **kw):
    """A model whose weights and BatchNorm statistics are away from their init values."""
    return synthesize_weights(create_model(variant, **kw), seed).eval()


@pytest.fixture
def make_checkpoint(tmp_path: Path):
    """Write a checkpoint of ``variant`` as the official code saves it (plain state dict by default)."""

    def make(variant: str = "s", *, wrap: str | None = None, prefix: str = "", seed: int = 0, **kw) -> Path:
        state = {prefix + k: v for k, v in trained_like(variant, seed, **kw).state_dict().items()}
        obj = {wrap: state, "epoch": 300} if wrap else state
        path = tmp_path / f"convmlp_{variant}_{wrap or 'plain'}_{seed}.pth"
        torch.save(obj, path)
        return path

    return make


@pytest.fixture
def make_engine(tmp_path: Path):
    """A fake engine file (not a TensorRT plan) with a real sidecar written by ``write_manifest``.

    Enough for everything that reads only the sidecar (profiles, variant, kind);
    anything that runs the engine needs TensorRT and is a ``gpu`` test.
    """
    from deploy.modelfile.engine import EngineManifest, write_manifest
    from deploy.modelfile.profiles import ShapeProfile

    def make(
        name: str = "s.engine",
        *,
        kind: str = "classifier",
        profile: tuple = ((1, 3, 128, 128), (8, 3, 224, 224), (32, 3, 1024, 1024)),
        **fields,
    ) -> Path:
        plan = tmp_path / name
        plan.write_bytes(b"not a real plan: " + name.encode())
        defaults = dict(
            tensorrt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
            cuda_version="12.8", precision="fp16", kind=kind, variant="s",
            num_classes=1000 if kind == "classifier" else None, input_name="input",
            output_names=["logits"] if kind == "classifier" else ["f1", "f2", "f3", "f4"],
            profiles=[ShapeProfile(*profile)], onnx_sha256="0" * 64, onnx_path="s.onnx",
        )
        write_manifest(EngineManifest(**{**defaults, **fields}), plan)
        return plan

    return make


@pytest.fixture(scope="session")
def s_onnx(tmp_path_factory):
    """Copy the FP32 ONNX graph of ConvMLP-S (synthetic weights, the default exporter) to ``dest``.

    The export (several seconds with the dynamo exporter) runs once per session and
    kind; each call gets its own copy to change at will. ``features=True`` gives the
    F1..F4 graph.
    """
    import shutil

    from convmlp.spec import io_spec
    from deploy.loader import reference_model
    from export.onnx import export_onnx

    cache = tmp_path_factory.mktemp("s-graphs")
    made: dict[bool, Path] = {}

    def copy(dest: Path, *, features: bool = False) -> Path:
        if features not in made:
            made[features] = export_onnx(
                reference_model("s", features=features), io_spec("s", features=features),
                cache / ("features.onnx" if features else "classifier.onnx"),
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made[features], dest)
        return dest

    return copy


@pytest.fixture(scope="session")
def s_graph_pair(tmp_path_factory, s_onnx) -> dict[str, Path]:
    """``convmlp_s.onnx`` (FP32, with the core metadata ``export`` writes) and ``convmlp_s.fp16.onnx`` beside it."""
    import onnx

    from export.fp16 import to_fp16
    from export.onnx import set_metadata

    folder = tmp_path_factory.mktemp("s-pair")
    fp32 = s_onnx(folder / "convmlp_s.onnx")
    proto = onnx.load(str(fp32))
    set_metadata(proto, {"variant": "s", "kind": "classifier", "precision": "fp32", "num_classes": "1000"})
    onnx.save(proto, str(fp32))
    half = to_fp16(proto)
    set_metadata(half, {"precision": "fp16"})
    onnx.save(half, str(folder / "convmlp_s.fp16.onnx"))
    return {"fp32": fp32, "fp16": folder / "convmlp_s.fp16.onnx"}


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, and fails, any attempt to open a runner or run a benchmark or a stream of sizes: for the
    checks that must refuse a request before any work."""
    import deploy.commands.bench as bench
    from deploy.commands.bench import stream

    calls: list[str] = []

    def refuse(*a: object, **k: object) -> None:
        calls.append("ran")
        raise AssertionError("benchmark work started")

    for module, name in ((bench, "run_benchmark"), (bench, "open_runners"), (stream, "run_stream")):
        monkeypatch.setattr(module, name, refuse)
    return calls
