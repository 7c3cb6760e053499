"""``benchmark --shapes`` / ``--shapes-file``: a stream of sizes beside an interleaved reference.

Spec parsing and its refusals (exit 2, one line, before any work), a real stream of tiny sizes on
onnxruntime with the S graph whose figures must agree with the requests it reports, the runner's
``shape_stats()`` read defensively, and a served model (faked) whose specialisations are unknown."""

from __future__ import annotations

import csv
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import cli
import deploy.commands.bench
from deploy.commands.bench.stream import DEFAULT_REQUESTS, parse_reference, parse_stream, read_shapes_file
from deploy.errors import OptionError
from deploy.runners.base import Runner


def invoke(*args: str):
    return CliRunner().invoke(cli.main, ["benchmark", *args])


def sizes_of(data: dict[str, Any], series: str = "stream") -> list[tuple[int, int, int]]:
    return [(r["batch"], r["height"], r["width"]) for r in data["requests"] if r["series"] == series]


# --------------------------------------------------------------------------- the spec


def test_random_spec_draws_in_range_with_the_batch_and_the_seed_decides() -> None:
    spec = parse_stream("random:64-512", batch=2, seed=7)
    drawn = spec.draw()
    assert len(drawn) == DEFAULT_REQUESTS
    assert all(b == 2 and 64 <= h <= 512 and 64 <= w <= 512 for b, h, w in drawn)
    assert len({(h, w) for _, h, w in drawn}) > 1  # not one size repeated
    assert parse_stream("random:64-512", batch=2, seed=7).draw() == drawn
    assert parse_stream("random:64-512", batch=2, seed=8).draw() != drawn
    assert parse_stream("random:64-64", requests=3).draw() == [(1, 64, 64)] * 3  # both ends are included


def test_cycle_visits_its_sizes_in_order_and_sizes_without_a_batch_take_batch() -> None:
    spec = parse_stream("cycle:224,320x480,2x512,3x100x200", batch=4, requests=6)
    order = [(4, 224, 224), (4, 320, 480), (2, 512, 512), (3, 100, 200)]
    assert spec.sizes == tuple(order)
    assert spec.draw() == order + order[:2]
    assert parse_reference(None, batch=4) == (4, 224, 224)
    assert parse_reference("2x96x128", batch=4) == (2, 96, 128)


def test_shapes_file_reads_one_size_a_line_with_comments(tmp_path: Path) -> None:
    f = tmp_path / "sizes.txt"
    f.write_text("# sizes seen in production\n224\n\n320x480   # a wide one\n2x64x96\n")
    spec = read_shapes_file(f, batch=3)
    assert spec.draw() == [(3, 224, 224), (3, 320, 480), (2, 64, 96)]  # each line once by default
    assert read_shapes_file(f, requests=4).draw() == [(1, 224, 224), (1, 320, 480), (2, 64, 96), (1, 224, 224)]


@pytest.mark.parametrize("text, message", [
    ("foo", "random:LO-HI"), ("random:64", "random:LO-HI"), ("random:16-64", ">= 32"),
    ("random:512-64", "range is empty"), ("cycle:", "list the sizes"), ("cycle:224,abc", "'abc'"),
    ("cycle:224,16", ">= 32"), ("224,320", "random:LO-HI"),
])
def test_malformed_specs_are_option_errors(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=message.replace("(", r"\(")):
        parse_stream(text)


@pytest.mark.parametrize("args, message", [
    (["--shapes", "foo"], "random:LO-HI"),
    (["--shapes", "random:16-64"], ">= 32"),
    (["--shapes", "random:512-64"], "range is empty"),
    (["--shapes", "cycle:224,abc"], "'abc'"),
    (["--shapes", "random:64-96", "-r", "224"], "--resolution does not go with it"),
    (["--shapes", "random:64-96", "--iterations", "3"], "--iterations does not go with it"),
    (["--shapes", "random:64-96", "--plot", "x.png"], "--plot does not go with it"),
    (["--shapes", "random:64-96", "-b", "1", "2"], "one --batch"),
    (["--shapes", "random:64-96", "--requests", "0"], "--requests"),
    (["--shapes", "random:64-96", "--reference-size", "16"], "--reference-size '16'"),
    (["--requests", "5"], "--requests goes with --shapes"),
    (["--seed", "1"], "--seed goes with --shapes"),
    (["--shapes", "random:64-96", "--shapes-file", "sizes.txt"], "not both"),
    (["--shapes-file", "{missing}"], "no such file"),
    (["--shapes-file", "{empty}"], "holds no size"),
    (["--shapes-file", "{bad}"], "line 2"),
    (["--shapes-file", "{folder}"], "is a folder"),
])
def test_refusals_are_exit_2_one_line_before_work(no_work: list[str], tmp_path: Path, args: list[str],
                                                   message: str) -> None:
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    (tmp_path / "bad.txt").write_text("224\n320y480\n")
    paths = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt", "bad": tmp_path / "bad.txt",
             "folder": tmp_path}
    res = invoke("-v", "s", *[a.format(**paths) for a in args])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], res.output
    assert res.output.rstrip().endswith(errors[0]) and "Traceback" not in res.output
    assert no_work == []


def test_every_size_of_the_stream_is_checked_against_an_engine(no_work: list[str], make_engine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(profile=((1, 3, 128, 128), (4, 3, 224, 224), (8, 3, 256, 256)))
    monkeypatch.setattr(deploy.commands.bench, "check_environment", lambda target: None)  # as if TensorRT were here
    res = invoke("--engine", str(engine), "--shapes", "cycle:224,160x192,512")
    assert res.exit_code == 2 and "512x512 is outside every profile" in res.output, res.output
    res = invoke("--engine", str(engine), "--shapes", "random:128-256", "--reference-size", "96")
    assert res.exit_code == 2 and "96x96 is outside every profile" in res.output, res.output
    assert no_work == []


# --------------------------------------------------------------------------- a real stream


@pytest.fixture(scope="module")
def s_graph(s_onnx, tmp_path_factory) -> Path:
    return s_onnx(tmp_path_factory.mktemp("stream") / "convmlp_s.onnx")


def _check_series(figures: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    lat = [r["latency_ms"] for r in rows]
    mpx = sum(r["batch"] * r["height"] * r["width"] for r in rows) / 1e6
    assert figures["requests"] == len(rows)
    assert min(lat) > 0
    assert figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"] <= figures["max_ms"] == max(lat)
    assert figures["megapixels"] == pytest.approx(mpx)
    assert figures["total_ms"] == pytest.approx(sum(lat))
    assert figures["ms_per_mpx"] == pytest.approx(sum(lat) / mpx)


def test_random_stream_on_onnxruntime_figures_agree_with_its_requests(s_graph: Path, tmp_path: Path) -> None:
    args = ["--onnx", str(s_graph), "--threads", "1", "--shapes", "random:64-96", "--requests", "6",
            "--reference-size", "64", "--warmup-ms", "0", "-b", "2"]
    res = invoke(*args, "--seed", "3", "--json", "--csv", str(tmp_path / "requests.csv"))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # nothing but JSON on stdout
    assert {"mode", "machine", "versions", "settings", "runner", "stream", "reference", "ratio", "first_sight",
            "specializations", "cache_bytes", "shape_stats", "notes", "requests"} <= set(data)
    assert data["mode"] == "stream" and data["runner"].startswith("onnxruntime")
    assert data["settings"]["target"]["backend"] == "onnxruntime"
    drawn = sizes_of(data)
    assert drawn == parse_stream("random:64-96", batch=2, requests=6, seed=3).draw()
    assert all(b == 2 and 64 <= h <= 96 and 64 <= w <= 96 for b, h, w in drawn)
    assert sizes_of(data, "reference") == [(2, 64, 64)] * 6 and data["reference"]["size"] == [2, 64, 64]
    # interleaved: each pair is one stream and one reference request, the order alternating
    series = [r["series"] for r in data["requests"]]
    assert series == ["stream", "reference", "reference", "stream"] * 3
    streamed = [r for r in data["requests"] if r["series"] == "stream"]
    _check_series(data["stream"], streamed)
    _check_series(data["reference"], [r for r in data["requests"] if r["series"] == "reference"])
    assert data["ratio"] == pytest.approx(data["stream"]["ms_per_mpx"] / data["reference"]["ms_per_mpx"])
    # first sight: a size not sent before (the reference counts as sent by the warm-up)
    seen, expected = {(2, 64, 64)}, []
    for s in drawn:
        expected.append(s not in seen)
        seen.add(s)
    assert [r["first_sight"] for r in streamed] == expected
    firsts = [r["latency_ms"] for r, first in zip(streamed, expected, strict=True) if first]
    assert data["first_sight"]["requests"] == len(firsts)
    assert data["first_sight"]["max_ms"] == (max(firsts) if firsts else None)
    # onnxruntime is dynamic by itself: it reports its policy and makes no specialisation
    assert data["policy"] == "dynamic" and data["specializations"] == 0
    rows = list(csv.DictReader((tmp_path / "requests.csv").open()))
    assert len(rows) == 12 and [r["series"] for r in rows] == series
    assert [float(r["latency_ms"]) for r in rows] == pytest.approx([r["latency_ms"] for r in data["requests"]])

    again = invoke(*args, "--seed", "3", "--json")
    other = invoke(*args, "--seed", "4", "--json")
    assert again.exit_code == 0 and other.exit_code == 0, again.output + other.output
    assert sizes_of(json.loads(again.stdout)) == drawn
    assert sizes_of(json.loads(other.stdout)) != drawn


def test_cycle_stream_table_and_json_out(s_graph: Path, tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    res = invoke("--onnx", str(s_graph), "--threads", "1", "--shapes", "cycle:64,96x64,2x64", "--requests", "5",
                 "--reference-size", "64", "--warmup-ms", "0", "--json-out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert sizes_of(data) == [(1, 64, 64), (1, 96, 64), (2, 64, 64), (1, 64, 64), (1, 96, 64)]
    assert [r["first_sight"] for r in data["requests"] if r["series"] == "stream"] == [False, True, True, False,
                                                                                       False]
    assert data["first_sight"]["requests"] == 2 and data["stream"]["distinct_sizes"] == 3
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("series"))
    assert "ms/Mpx" in lines[header] and "p99 ms" in lines[header]
    assert lines[header + 2].startswith("cycle:64,96x64,2x64") and lines[header + 3].startswith("reference 64x64")
    assert any(line.startswith("ratio:") for line in lines) and any("first sight: 2" in line for line in lines)
    assert f"wrote {out}" in res.stdout


# --------------------------------------------------------------------------- what the runner says


class FakeRunner(Runner):
    """Answers every size at once; ``stats`` is what its ``shape_stats()`` returns (None: no such method)."""

    name = "fake[cpu]"

    def __init__(self, stats: dict[str, Any] | None) -> None:
        super().__init__()
        self.sent: list[tuple[int, ...]] = []
        if stats is not None:
            self.shape_stats = lambda: stats

    @property
    def output_names(self) -> list[str]:
        return ["logits"]

    def activate(self) -> None:
        pass

    def load_input(self, x: np.ndarray) -> Any:
        self.sent.append(tuple(x.shape))
        return x

    def run(self, handle: Any) -> None:
        pass

    def fetch(self) -> dict[str, np.ndarray]:
        return {"logits": np.zeros((1, 10), np.float32)}


def test_shape_stats_are_read_defensively_and_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = {"policy": "static", "compiles": 4, "cache_bytes": 12345, "specialized": [[1, 64, 64]], "evicted": 0}
    runner = FakeRunner(stats)

    @contextmanager
    def fake_open(target: Any):
        yield [runner]

    monkeypatch.setattr(deploy.commands.bench, "open_runners", fake_open)
    res = invoke("-v", "s", "--shapes", "cycle:64,96", "--requests", "4", "--warmup-ms", "0", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["specializations"] == 4 and data["cache_bytes"] == 12345 and data["policy"] == "static"
    assert data["shape_stats"] == stats and data["notes"] == []
    assert runner.sent[0] == (1, 3, 224, 224)  # the warm-up is on the reference
    assert [s for s in runner.sent[1:] if s != (1, 3, 224, 224)] == [(1, 3, 64, 64), (1, 3, 96, 96)] * 2
    res = invoke("-v", "s", "--shapes", "cycle:64,96", "--requests", "2", "--warmup-ms", "0")
    assert res.exit_code == 0, res.output
    assert "specialisations 4; cache 12345 bytes; policy static" in res.output and "evicted 0" in res.output

    partial = FakeRunner({"policy": "dynamic"})  # a runner that reports less
    monkeypatch.setattr(deploy.commands.bench, "open_runners", contextmanager(lambda target: iter([[partial]])))
    data = json.loads(invoke("-v", "s", "--shapes", "cycle:64", "--requests", "1", "--warmup-ms", "0",
                             "--json").stdout)
    assert data["specializations"] is None and data["cache_bytes"] is None and data["policy"] == "dynamic"


def test_served_model_stream_says_specialisations_are_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    import deploy.runners.endpoint as endpoint_mod

    served = endpoint_mod.Endpoint("127.0.0.1:9", "convmlp", "http", "input", ["logits"], 1000, 4)
    runners: list[FakeRunner] = []

    def fake_runner(endpoint: Any) -> FakeRunner:
        assert endpoint is served
        runners.append(FakeRunner({"compiles": 99}))  # even a runner that had them is not asked over the wire
        return runners[-1]

    monkeypatch.setattr(endpoint_mod, "describe_endpoint", lambda url, model, protocol: served)
    monkeypatch.setattr(endpoint_mod, "EndpointRunner", fake_runner)
    base = ["--endpoint", "127.0.0.1:9", "--model-name", "convmlp", "--warmup-ms", "0"]
    res = invoke(*base, "--shapes", "random:64-80", "--requests", "3", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["endpoint"] == {"url": "127.0.0.1:9", "model": "convmlp", "protocol": "http"}
    assert data["specializations"] is None and data["shape_stats"] is None
    assert any("not known over the wire" in n for n in data["notes"])
    assert data["stream"]["requests"] == 3 and math.isfinite(data["ratio"])
    res = invoke(*base, "--shapes", "cycle:8x64", "--requests", "1")
    assert res.exit_code == 2 and "max_batch_size 4" in res.output
    res = invoke(*base, "--shapes", "cycle:64", "--concurrency", "2")
    assert res.exit_code == 2 and "--concurrency does not go with it" in res.output
