from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import cli
from convmlp import __version__


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli.main, list(args), catch_exceptions=False)

    return invoke


def test_help_and_version(run):
    for flag in ("-h", "--help"):
        res = run(flag)
        assert res.exit_code == 0 and "Exit codes" in res.output
    res = run("--version")
    assert res.exit_code == 0 and __version__ in res.output


def test_profile_table_and_json(run):
    res = run("profile", "--variant", "s", "--resolution", "224", "97x131")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "GMACs" in lines[0] and len(lines) == 4
    assert "2.385" in lines[2] and "97x131" in lines[3]
    res = run("profile", "--variant", "L", "--json")
    data = json.loads(res.output)
    assert data["variant"] == "l" and data["resolution"] == [224, 224]
    assert round(data["params"] / 1e6, 1) == 42.7 and round(data["gmacs"], 1) == 9.9
    res = run("profile", "-v", "m", "-r", "224", "-r", "512", "--json")
    data = json.loads(res.output)
    assert [d["resolution"] for d in data] == [[224, 224], [512, 512]]
    assert data[1]["gmacs"] > 5 * data[0]["gmacs"]


def test_unknown_variant_exit_2_names_choices(run):
    res = CliRunner().invoke(cli.main, ["profile", "--variant", "xl"])
    assert res.exit_code == 2
    assert "'s', 'm', 'l'" in res.output


@pytest.mark.parametrize("res_arg", ["16", "31x224", "abc", "2x3x4"])
def test_bad_resolution_exit_2(res_arg):
    res = CliRunner().invoke(cli.main, ["profile", "--variant", "s", "--resolution", res_arg])
    assert res.exit_code == 2
    assert "Traceback" not in res.output


def test_greedy_option_leaves_other_options_alone():
    cmd = cli.main.commands["profile"]
    ctx = cmd.make_context("profile", ["-r", "224", "320x640", "--variant", "s", "--json"])
    assert ctx.params["resolution"] == ((224, 224), (320, 640))
    assert ctx.params["variant"] == "s" and ctx.params["json_flag"] is True


def test_missing_or_garbage_weights_exit_1_one_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--weights", str(junk), "-o", str(tmp_path / "a")])
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and "not a readable PyTorch checkpoint" in res.output
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--weights", str(tmp_path / "none.pth")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_mismatched_weights_exit_1(make_checkpoint, tmp_path):
    path = make_checkpoint("s")
    res = CliRunner().invoke(cli.main, ["export", "-v", "l", "--weights", str(path), "-o", str(tmp_path / "a")])
    assert res.exit_code == 1 and "shape mismatch at" in res.output
    assert not (tmp_path / "a" / "convmlp_l.onnx").exists()
