"""``validate --engine`` logic that needs no TensorRT: which model the engine is checked against."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import cli


@pytest.mark.parametrize("args,msg", [
    (["-v", "l"], "is ConvMLP-S, not ConvMLP-L"),
    ([], "pass it with --weights"),
])
def test_engine_from_checkpoint_needs_that_checkpoint(make_engine, args, msg):
    eng = make_engine(checkpoint_sha256="ab" * 32)
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng), *args])
    assert res.exit_code == 1 and msg in res.output and "Traceback" not in res.output


def test_wrong_checkpoint_is_named_before_any_engine_work(make_engine, make_checkpoint):
    eng = make_engine(checkpoint_sha256="ab" * 32)
    ckpt = make_checkpoint("s")
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng), "--weights", str(ckpt)])
    assert res.exit_code == 1 and "is not the checkpoint" in res.output


def test_engine_without_sidecar_is_one_line(tmp_path):
    eng = tmp_path / "bare.engine"
    eng.write_bytes(b"plan")
    res = CliRunner().invoke(cli.main, ["validate", "--engine", str(eng)])
    assert res.exit_code == 1 and res.output.count("\n") == 1
