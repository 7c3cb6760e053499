"""``validate --engine`` logic that needs no TensorRT: which model the engine is checked against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli

SIDE = {
    "format_version": 1, "tensorrt_version": "10.8.0.43", "gpu_name": "GPU", "compute_capability": "9.0",
    "cuda_version": "12.8", "precision": "fp16", "kind": "classifier", "variant": "s", "num_classes": 1000,
    "input_name": "input", "output_names": ["logits"],
    "profiles": [{"min": [1, 3, 64, 64], "opt": [2, 3, 128, 128], "max": [4, 3, 256, 256]}],
    "onnx_sha256": "0" * 64, "onnx_path": "convmlp_s.fp16.onnx", "build_options": {}, "created": "2026-01-01T00:00:00Z",
    "hardware_compatibility": None, "version_compatible": False, "tool_version": "0.1.0",
}


def _engine(tmp_path: Path, **over) -> Path:
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"plan")
    (tmp_path / "m.engine.json").write_text(json.dumps({**SIDE, **over}))
    return eng


@pytest.mark.parametrize("args,msg", [
    (["-v", "l"], "is ConvMLP-S, not ConvMLP-L"),
    ([], "pass it with --weights"),
])
def test_engine_from_checkpoint_needs_that_checkpoint(tmp_path, args, msg):
    eng = _engine(tmp_path, checkpoint_sha256="ab" * 32)
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng), *args])
    assert res.exit_code == 1 and msg in res.output and "Traceback" not in res.output


def test_wrong_checkpoint_is_named_before_any_engine_work(tmp_path, make_checkpoint):
    eng = _engine(tmp_path, checkpoint_sha256="ab" * 32)
    ckpt = make_checkpoint("s")
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng), "--weights", str(ckpt)])
    assert res.exit_code == 1 and "is not the checkpoint" in res.output


def test_engine_without_sidecar_is_one_line(tmp_path):
    eng = tmp_path / "bare.engine"
    eng.write_bytes(b"plan")
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng)])
    assert res.exit_code == 1 and res.output.count("\n") == 1
