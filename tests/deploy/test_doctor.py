"""``doctor``: what the machine has and what each command can do."""

from __future__ import annotations

import json

from click.testing import CliRunner

import cli
from deploy.commands.doctor import collect, cpu_features
from deploy.trt.version import tensorrt_version

COMMANDS = {"profile", "export", "export --fp16", "export --int8", "export --openvino", "validate --onnx",
            "validate --engine", "build", "benchmark", "benchmark --plot", "predict", "evaluate", "triton"}


def test_every_command_is_covered() -> None:
    """Every command of the CLI appears in the report (a new command must be added to doctor)."""
    report = collect()
    listed = {name.split()[0] for name in report["commands"]}
    assert set(cli.main.commands) - {"doctor"} <= listed | {"doctor"}
    assert COMMANDS <= set(report["commands"])


def test_collect_reports_components_and_commands() -> None:
    import importlib.util

    import torch

    report = collect()
    assert report["torch"] == torch.__version__
    assert report["cuda_available"] == torch.cuda.is_available()
    assert report["tensorrt"]["version"] == tensorrt_version()
    build = report["commands"]["build"]
    usable = tensorrt_version() is not None and torch.cuda.is_available()
    assert build["ok"] == usable and (usable or build["why"])
    bench = report["commands"]["benchmark"]["backends"]
    assert "torch" in bench and ("tensorrt" in bench) == usable
    assert ("openvino" in bench) == (importlib.util.find_spec("openvino") is not None)
    plot = report["commands"]["benchmark --plot"]
    assert plot["ok"] == (importlib.util.find_spec("matplotlib") is not None)
    assert report["commands"]["triton"]["ok"]  # writing a repository needs no Triton library


def test_cpu_features_from_cpuinfo() -> None:
    spr = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile\n"
    f = cpu_features(spr)
    assert f["model"] == "Intel(R) Xeon(R) Platinum 8480+" and f["bf16_unit"] == "AMX" and f["int8_unit"] == "AMX"
    zen4 = "model name\t: AMD EPYC 9654\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"
    f = cpu_features(zen4)
    assert f["bf16_unit"] == "AVX512_BF16" and f["int8_unit"] == "AVX512_VNNI" and "amx_bf16" not in f["flags"]
    old = "model name\t: Intel(R) Xeon(R) E5-2680\nflags\t\t: fpu avx2\n"
    f = cpu_features(old)
    assert not f["bf16"] and f["bf16_unit"] is None and f["int8_unit"] is None


def test_doctor_json_and_table() -> None:
    runner = CliRunner()
    result = runner.invoke(cli.main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert COMMANDS <= set(data["commands"]) and "flags" in data["cpu"]
    table = runner.invoke(cli.main, ["doctor"])
    assert table.exit_code == 0
    assert "tensorrt" in table.output and "validate --engine" in table.output and "benchmark --plot" in table.output
