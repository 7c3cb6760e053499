"""``validate --engine`` logic that needs no TensorRT: which model the engine is checked against."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import cli
from deploy.backends import Backend


@pytest.fixture
def trt_present(monkeypatch):
    """Pretend TensorRT and CUDA are here, to test what validate checks after them (the sidecar)."""
    monkeypatch.setattr(Backend, "require", lambda self: None)


@pytest.mark.parametrize("args,msg", [
    (["-v", "l"], "is ConvMLP-S, not ConvMLP-L"),
    ([], "pass it with --weights"),
])
def test_engine_from_checkpoint_needs_that_checkpoint(make_engine, trt_present, args, msg):
    eng = make_engine(checkpoint_sha256="ab" * 32)
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng), *args])
    assert res.exit_code == 1 and msg in res.output and "Traceback" not in res.output


def test_wrong_checkpoint_is_named_before_any_engine_work(make_engine, make_checkpoint, trt_present):
    eng = make_engine(checkpoint_sha256="ab" * 32)
    ckpt = make_checkpoint("s")
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng), "--weights", str(ckpt)])
    assert res.exit_code == 1 and "is not the checkpoint" in res.output


def test_engine_without_sidecar_is_one_line(tmp_path, trt_present):
    eng = tmp_path / "bare.engine"
    eng.write_bytes(b"plan")
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng)])
    assert res.exit_code == 1 and res.output.count("\n") == 1


@pytest.mark.parametrize("command", [
    ["validate", "--engine", "{eng}"],
    ["benchmark", "--engine", "{eng}"],
    ["predict", "{img}", "--engine", "{eng}"],
    ["evaluate", "--data", "{data}", "--engine", "{eng}"],
])
def test_missing_tensorrt_is_said_first(tmp_path, command):
    """A broken sidecar or none at all: without TensorRT, that is what the user hears first."""
    import importlib.util

    import torch

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and CUDA are here")
    from PIL import Image

    eng = tmp_path / "model.engine"
    eng.write_bytes(b"plan")
    (tmp_path / "model.engine.json").write_text("{not json")
    (tmp_path / "data" / "c").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "data" / "c" / "a.png")
    args = [a.format(eng=eng, img=tmp_path / "data" / "c" / "a.png", data=tmp_path / "data") for a in command]
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == 1, res.output
    assert ("TensorRT is not installed" in res.output or "needs a CUDA GPU" in res.output), res.output
    assert "sidecar" not in res.output and "json" not in res.output.lower()
