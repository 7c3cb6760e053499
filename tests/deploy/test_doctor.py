"""``doctor``: what the machine has and what each command can do."""

from __future__ import annotations

import json

from click.testing import CliRunner

import cli
from deploy.doctor import collect
from deploy.trt.version import tensorrt_version

COMMANDS = {"export", "validate --onnx", "build", "validate --engine", "benchmark", "triton"}


def test_collect_reports_components_and_commands() -> None:
    import torch

    report = collect()
    for key in ("python", "torch", "cuda_available", "gpu", "onnxruntime", "tensorrt", "modelopt", "onnxsim", "onnxslim"):
        assert key in report
    assert report["torch"] == torch.__version__
    assert report["cuda_available"] == torch.cuda.is_available()
    assert set(report["commands"]) == COMMANDS
    assert report["tensorrt"]["version"] == tensorrt_version()
    build = report["commands"]["build"]
    usable = tensorrt_version() is not None and torch.cuda.is_available()
    assert build["ok"] == usable
    if not usable:
        assert build["why"]
    assert "torch" in report["commands"]["benchmark"]["backends"]
    assert ("tensorrt" in report["commands"]["benchmark"]["backends"]) == usable


def test_doctor_json_and_table() -> None:
    runner = CliRunner()
    result = runner.invoke(cli.main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["commands"]) == COMMANDS
    table = runner.invoke(cli.main, ["doctor"])
    assert table.exit_code == 0
    assert "tensorrt" in table.output and "validate --engine" in table.output
