"""Outputs that tell runs apart, and output paths refused before any work (issue: the CLI as a user meets it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
import deploy.commands.bench as bench


@pytest.fixture(scope="module")
def graphs(s_graph_pair) -> dict[str, Path]:
    return s_graph_pair


def _bench(*args: str):
    return CliRunner().invoke(cli.main, ["benchmark", "-r", "64", "--iterations", "2", "--warmup-ms", "0", *args])


def test_rows_name_precision_kind_and_file(graphs):
    rows = {}
    for name, path in graphs.items():
        res = _bench("--onnx", str(path), "--json")
        assert res.exit_code == 0, res.output
        (row,) = json.loads(res.stdout)["results"]
        rows[name] = row
    assert (rows["fp32"]["precision"], rows["fp32"]["model"]) == ("fp32", "convmlp_s.onnx")
    assert (rows["fp16"]["precision"], rows["fp16"]["model"]) == ("fp16", "convmlp_s.fp16.onnx")
    assert rows["fp32"]["kind"] == rows["fp16"]["kind"] == "classifier"
    res = _bench("--onnx", str(graphs["fp16"]), "--csv", str(graphs["fp16"].parent / "r.csv"))
    header = (graphs["fp16"].parent / "r.csv").read_text().splitlines()[0].split(",")
    assert {"model", "precision", "kind"} <= set(header)


def test_trtexec_like_block_per_case_and_summary(graphs):
    res = _bench("-v", "s", "-r", "64", "96")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert out.count("Throughput: ") == 2 and out.count("Latency: min = ") == 2
    assert "=== convmlp_s fp32 classifier on torch[cpu,fp32]: batch 1, 64x64 ===" in out
    assert "median = " in out and "max = " in out and "p99 = " in out
    assert "min ms" in out and "max ms" in out  # the final table too
    # blocks come as each case finishes: the first is printed before the second case runs
    assert out.index("batch 1, 64x64") < out.index("batch 1, 96x96") < out.index("runner ")


def test_plain_progress_lines_when_not_a_terminal():
    res = _bench("-v", "s", "-r", "64", "96")
    assert "benchmark: case 1/2 b1 64x64" in res.stderr and "benchmark: case 2/2 b1 96x96" in res.stderr


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--plot", "{tmp}/out.txt", "'.txt' is not a format it writes"),
        ("--json-out", "{tmp}", "is a folder"),
        ("--csv", "{tmp}/missing/r.csv", "does not exist"),
        ("--json", "{tmp}", "is a folder"),  # the deprecated --json FILE
    ],
)
def test_output_paths_are_refused_before_the_sweep(tmp_path, monkeypatch, option, value, message):
    def never(*a, **k):
        raise AssertionError("the sweep ran")

    monkeypatch.setattr(bench, "run_benchmark", never)
    res = _bench("-v", "s", option, value.format(tmp=tmp_path))
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_deprecated_json_file_still_writes(tmp_path):
    res = _bench("-v", "s", "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 0 and "deprecated" in res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["batch"] == 1


def test_plot_names_resolutions(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    seen: list[list[str]] = []
    real = Figure.savefig

    def spy(self, *a, **k):
        for ax in self.axes:
            seen.append([t.get_text() for t in ax.get_xticklabels()])
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", spy)
    res = _bench("-v", "s", "-r", "64", "32x96", "--plot", str(tmp_path / "p.png"))
    assert res.exit_code == 0, res.output
    assert seen and seen[0] == ["32×96", "64×64"] and (tmp_path / "p.png").stat().st_size > 0


def test_every_command_with_json_also_has_json_out():
    """``--json`` prints to stdout everywhere; wherever it exists, ``--json-out FILE`` writes the same JSON."""
    with_json = []
    for name, command in cli.main.commands.items():
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        if "--json" in options:
            with_json.append(name)
            assert "--json-out" in options, f"{name} has --json but no --json-out"
    assert {"export", "validate", "build", "benchmark", "triton", "doctor"} <= set(with_json)


@pytest.mark.parametrize("command", [["profile", "-v", "s"], ["validate", "--onnx", "{fp32}"], ["doctor"]])
def test_json_out_writes_what_json_prints(graphs, tmp_path, command):
    args = [a.format(fp32=graphs["fp32"]) for a in command]
    printed = CliRunner().invoke(cli.main, [*args, "--json"])
    written = CliRunner().invoke(cli.main, [*args, "--json-out", str(tmp_path / "o.json")])
    assert printed.exit_code == written.exit_code == 0, printed.output + written.output
    assert json.loads(printed.stdout) == json.loads((tmp_path / "o.json").read_text())
    res = CliRunner().invoke(cli.main, [*args, "--json-out", str(tmp_path / "missing" / "o.json")])
    assert res.exit_code == 2 and "--json-out" in res.output


def test_a_cosine_column_prints_one_format(capsys):
    """A column of cosines prints 1.0 as 1.000000 beside 0.999987, not as "1"; other columns keep 1."""
    from deploy.cli.present import echo_table

    echo_table([{"cos": 1.0, "ms": 1.0}, {"cos": 0.999987, "ms": 2.5}], [("cos", "cosine"), ("ms", "ms")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["1.000000", "1"] and lines[3].split() == ["0.999987", "2.5"]
