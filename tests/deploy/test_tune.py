"""``tune``: gate first, budget and coverage, the deployment file and its consumers, bad input, Ctrl-C.

Tiny workloads (64x64), one or two threads, small budgets: the checks are of behaviour (what is timed,
what is written, which codes), never of which configuration wins.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import cli
import deploy
from convmlp.weights import file_sha256
from deploy.commands.tune import TuneRequest, run_tune
from deploy.commands.tune import figures as figures_mod
from deploy.commands.tune import search as search_mod
from deploy.commands.tune import space as space_mod
from deploy.commands.tune.workload import parse_workload
from deploy.deployconfig import (
    ConfigError,
    DeployConfig,
    ModelFile,
    load_config,
    machine_facts,
    read_config,
    write_config,
)
from deploy.errors import DeployError, OptionError
from deploy.machine import cpu_features
from tests.photos import HELD_OUT_PHOTOS, make_photo_set

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tune-photos")
    make_photo_set(folder, 8, sources=HELD_OUT_PHOTOS, size=(64, 64))
    return folder


@pytest.fixture(scope="module")
def graphs(s_graph_pair, tmp_path_factory) -> dict[str, Path]:
    """The FP32 graph and a damaged copy of it (one weight scaled: far beyond any gate, same metadata)."""
    folder = tmp_path_factory.mktemp("tune-graphs")
    proto = onnx.load(str(s_graph_pair["fp32"]))
    big = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * 3.0 + 0.05, big.name))
    damaged = folder / "convmlp_s.damaged.onnx"
    onnx.save(proto, str(damaged))
    return {"fp32": s_graph_pair["fp32"], "damaged": damaged}


def _request(tmp_path: Path, onnx_paths, photos: Path, **kw) -> TuneRequest:
    defaults = dict(onnx=list(onnx_paths), images=photos, shapes="64", budget_s=120.0, cores=1,
                    output=tmp_path / "deploy.json")
    return TuneRequest(**{**defaults, **kw})


# --------------------------------------------------------------------------- the search


def test_a_damaged_graph_is_dropped_at_its_gate_and_never_timed(tmp_path, graphs, photos, monkeypatch):
    timed, gated = [], []
    real_open, real_compare = search_mod.open_timed, search_mod.compare_runner

    def spy_open(candidate, *, exact=False):
        if not exact:
            timed.append(candidate.model.path)
        return real_open(candidate, exact=exact)

    def spy_compare(runner, cases, **kw):
        gated.append(runner.name)
        return real_compare(runner, cases, **kw)

    monkeypatch.setattr(search_mod, "open_timed", spy_open)
    monkeypatch.setattr(search_mod, "compare_runner", spy_compare)
    result = run_tune(_request(tmp_path, [graphs["fp32"], graphs["damaged"]], photos))
    rows = result.rows()
    damaged = [r for r in rows if r["model"] == graphs["damaged"].name]
    good = [r for r in rows if r["model"] == graphs["fp32"].name]
    assert damaged and all(r["status"] == "dropped at gate" and r["gate"] is False for r in damaged)
    assert all(r["p50_ms"] is None for r in damaged)
    assert graphs["damaged"] not in timed and graphs["fp32"] in timed
    assert all(r["gate"] for r in good)
    assert len(gated) == len({t.candidate.gate_key for t in result.search.trials})  # once per key
    assert result.config is not None and result.config.model.path == str(graphs["fp32"])
    assert result.gate_set == "held-out images (8)"
    assert result.search.stopped == "done" and result.search.coverage()["fraction"] == 1.0
    assert any(line.startswith("tensorrt:") for line in result.space.left_out)
    # the figures deploy.json records are the best timed alone after the search, at its last passes
    # in 3 fresh processes (no runner of it opened here), the median one's, every round >= ROUND_MIN_S
    best, measured = result.search.best, result.config.measured
    assert best.alone and measured["alone"] and measured["timed_in"] == "3 fresh processes"
    assert "timed alone after the search in 3 fresh processes, the median process's" in measured["how"]
    assert measured["processes"] == 3 and sorted(measured["process_size_p50_ms"])[1] == measured["size_p50_ms"]
    assert measured["size_p50_ms"] == measured["p50_ms"]  # one size: the per-size p50 is the p50
    assert measured["queries"] == search_mod.ROUNDS * measured["passes_per_round"] * 1  # one size, per process
    assert measured["passes_per_round"] / measured["images_per_s"] >= search_mod.ROUND_MIN_S * 0.5
    assert timed and len(timed) % 2 == 0  # comparisons only (two runners each): none opened here for the best
    assert not [p for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("convmlp-timing-")]


def test_the_best_is_timed_here_when_a_fresh_process_fails_and_says_so(tmp_path, graphs, photos, monkeypatch):
    from deploy.commands.tune import remeasure as remeasure_mod

    def broken(*args, **kw):
        raise DeployError("the fresh timing process failed: no interpreter")

    monkeypatch.setattr(remeasure_mod, "in_fresh_processes", broken)
    result = run_tune(_request(tmp_path, [graphs["fp32"]], photos, shapes="cycle:64,64x80"))
    measured = result.config.measured
    assert measured["alone"] and measured["timed_in"].startswith("the tune process (3 fresh processes failed: ")
    assert measured["processes"] == 1
    assert measured["queries"] == search_mod.ROUNDS * measured["passes_per_round"] * 2  # two sizes
    # and the module a fresh process runs: a config it cannot use is one line, exit 2
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    res = subprocess.run([sys.executable, "-m", "deploy.commands.tune.remeasure", str(bad)], capture_output=True,
                         text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_the_budget_stops_the_search_with_the_best_so_far_and_the_coverage(tmp_path, graphs, photos):
    ticks = itertools.count(0.0, 0.75)  # every reading of the clock is 0.75 s later
    result = run_tune(_request(tmp_path, [graphs["fp32"]], photos, budget_s=8.0, cores=2,
                               clock=lambda: next(ticks)))
    cov = result.search.coverage()
    assert result.search.stopped == "budget"
    assert cov["decided"] < cov["candidates"] and cov["fraction"] < 1.0
    assert "stopped at the budget" in result.search.coverage_line()
    assert result.config is not None
    assert result.config.search["coverage"]["stopped"] == "budget"
    assert any(t.status == "not reached" for t in result.search.trials)


def test_the_budget_counts_one_untimed_query_per_slice_not_one_per_size():
    from types import SimpleNamespace

    workload = parse_workload("random:64-512")  # 16 sizes
    search = search_mod.Search(space_mod.Space([], [], {}), [], workload, objective="latency", budget_s=60.0)
    assert len(workload.sizes) == 16 and search._slice_queries(1) == search_mod.ROUNDS * 17
    assert search._slice_queries(4) == search_mod.ROUNDS * (16 * 4 + 1)
    search._cost_per_query = 2.0  # seconds per (query x Mpx x batch x streams)
    one, two = SimpleNamespace(batch=1, streams=1), SimpleNamespace(batch=2, streams=1)
    per_side = search_mod.ROUNDS * 17 * workload.megapixels() * 2.0
    assert search._compare_estimate(one, two, 1) == pytest.approx(2 * search._open_cost + 3 * per_side)
    # a gate already held for the key costs nothing more
    trial = search_mod.Trial(SimpleNamespace(gate_key="k"))
    search._gate_cost = 30.0
    assert search._gate_estimate(trial) == 30.0
    search.gates["k"] = search_mod.Gate("fp32", None, None)
    assert search._gate_estimate(trial) == 0.0


def test_a_stream_of_sizes_is_judged_by_each_sizes_p50_averaged(monkeypatch):
    a, b, c = (1, 3, 64, 64), (1, 3, 64, 96), (1, 3, 96, 96)
    lat, shapes = [1.0, 2.0, 3.0, 10.0, 12.0, 100.0], [a, a, a, b, b, c]
    assert figures_mod.size_p50(lat, shapes) == pytest.approx((2.0 + 11.0 + 100.0) / 3)
    assert figures_mod.size_p50([3.0, 1.0, 2.0, 9.0], [a] * 4) == 2.5  # one size: its p50
    with pytest.raises(ValueError):
        figures_mod.size_p50(lat, shapes[:-1])
    # a slice and the figures over slices: by size, whatever order the sizes came in; the p50 of all queries
    # sits on whichever size the middle query falls on
    monkeypatch.setattr(search_mod, "time_slice", lambda group, sizes, inputs: (lat, shapes, 0.5))
    side = search_mod.SideTimings()
    workload = parse_workload("cycle:64,64x96,96")
    assert side.slice([], 1, workload, 2, {}) == (pytest.approx(113.0 / 3), 6, 0.5)
    side.slice([], 1, workload, 2, {})
    f = side.figures()
    assert f.size_p50_ms == pytest.approx(113.0 / 3) and f.p50_ms == pytest.approx(6.5) and f.queries == 12
    # the median process: lowest-first on a figure in ms, highest-first on images/s
    figs = [replace(f, size_p50_ms=v, images_per_s=100.0 / v) for v in (3.0, 1.0, 2.0)]
    assert figures_mod.median_process(figs, "size_p50_ms").size_p50_ms == 2.0
    assert figures_mod.median_process(figs, "images_per_s").size_p50_ms == 2.0
    assert figures_mod.median_process(figs[:2], "size_p50_ms").size_p50_ms == 1.0  # the lower middle: the better
    # processes that spread past UNSTEADY_SPREAD are one line that says by how much; steady ones, nothing
    assert figures_mod.process_spread(figs, "size_p50_ms") == pytest.approx(3.0)
    note = figures_mod.unsteady_note(figs, "size_p50_ms", "benchmark --config")
    assert note.startswith("benchmark --config: the 3 fresh processes spread 3.00x on size_p50_ms (1 to 3)")
    steady = [replace(f, size_p50_ms=v) for v in (1.0, 1.0 * figures_mod.UNSTEADY_SPREAD)]
    assert figures_mod.unsteady_note(steady, "size_p50_ms", "x") is None


def test_workloads_and_thread_choices():
    assert parse_workload("64").sizes == ((64, 64),)
    assert parse_workload("cycle:224,320x480").sizes == ((224, 224), (320, 480))
    drawn = parse_workload("random:64-512")
    assert drawn.kind == "random" and all(64 <= s <= 512 for hw in drawn.sizes for s in hw)
    assert drawn.sizes == parse_workload("random:64-512").sizes  # the same stream for every candidate
    for bad in ("2x224", "cycle:", "random:16-20", "nonsense"):
        with pytest.raises(OptionError):
            parse_workload(bad)
    assert space_mod.thread_choices(2) == [2, 1]
    assert space_mod.thread_choices(1) == [1]
    assert space_mod.thread_choices(16)[0] == 16 and space_mod.thread_choices(16)[-1] == 1


def test_the_static_policy_is_searched_only_where_the_sizes_fit_its_bound():
    few = space_mod.shape_policies(parse_workload("cycle:224,320x480"))
    assert [p.mode for p in few] == ["dynamic", "static"] and few[0].warmup == ((1, 224, 224), (1, 320, 480))
    assert space_mod.static_left_out(parse_workload("cycle:224,320x480")) is None
    many = parse_workload("random:64-512")  # 16 distinct sizes, 8 executables kept
    assert [p.mode for p in space_mod.shape_policies(many)] == ["dynamic"]
    assert space_mod.shape_policies(many)[0].warmup == ()
    assert "16 distinct sizes" in space_mod.static_left_out(many)


# --------------------------------------------------------------------------- the deployment file


def _config(tmp_path: Path, model: Path, **changes) -> Path:
    precision = "bf16" if cpu_features()["bf16"] else "fp32"
    cfg = DeployConfig(
        backend="openvino", files=(ModelFile("model", str(model), file_sha256(model), "onnx", "fp32"),),
        precision=precision, computes=precision, threads=1, streams=2,
        batching={"batch": 4, "max_batch": 4, "max_queue_delay_us": 1500},
        shape_policy={"mode": "static", "warmup": [[1, 64, 64]], "searched": True},
        variant="s", machine=machine_facts(),
    )
    cfg = replace(cfg, **changes)
    return write_config(tmp_path / "deploy.json", cfg)


def test_the_config_opens_exactly_its_backend_precision_threads(tmp_path, graphs, monkeypatch):
    pytest.importorskip("openvino")
    path = _config(tmp_path, graphs["fp32"])
    assert read_config(path).model.path == str(graphs["fp32"].resolve())
    with deploy.load(config=path) as model:
        cfg = model.deployment
        assert (model.backend, model.precision) == ("openvino", cfg.computes)
        assert (model._loaded.runner.threads, model._loaded.runner.streams) == (1, 2)
        assert getattr(model._loaded.runner, "shapes", None) in (None, read_config(path).shape_policy["mode"]) or (
            model._loaded.runner.shapes.mode == "static")
        assert model(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 1000)
    with pytest.raises(OptionError, match="config= fixes"):
        deploy.load(graphs["fp32"], config=path)

    import deploy.commands.serve as serve_mod

    seen = {}
    monkeypatch.setattr(serve_mod, "check_pytriton", lambda: None)
    monkeypatch.setattr(serve_mod, "serve", lambda model, options, on_ready=None: seen.update(
        backend=model.backend, precision=model.precision, threads=model._loaded.runner.threads, options=options))
    res = CliRunner().invoke(cli.main, ["serve", "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert (seen["backend"], seen["precision"], seen["threads"]) == ("openvino", cfg.computes, 1)
    assert (seen["options"].max_batch, seen["options"].max_queue_delay_us, seen["options"].instances) == (4, 1500, 1)
    res = CliRunner().invoke(cli.main, ["serve", "--config", str(path), "--threads", "2"])
    assert res.exit_code == 2 and "--threads contradicts --config" in res.output

    res = CliRunner().invoke(cli.main, ["triton", "--config", str(path), "--repository", str(tmp_path / "repo")])
    assert res.exit_code == 0, res.output
    text = next((tmp_path / "repo").glob("*/config.pbtxt")).read_text()
    for needle in ('key: "NUM_STREAMS"', 'string_value: "2"', 'key: "INFERENCE_NUM_THREADS"', 'string_value: "1"',
                   "max_batch_size: 4", "max_queue_delay_microseconds: 1500", "preferred_batch_size: [ 4 ]"):
        assert needle in text, needle
    assert ('key: "HINT_BF16"' in text) == (cfg.precision == "bf16")  # the precision tune chose is served
    fp32 = _config(tmp_path, graphs["fp32"], precision="fp32", computes="fp32")
    res = CliRunner().invoke(cli.main, ["triton", "--config", str(fp32), "--repository", str(tmp_path / "repo3")])
    assert res.exit_code == 0 and 'key: "HINT_BF16"' not in next((tmp_path / "repo3").glob("*/config.pbtxt")).read_text()
    # the entry cannot carry FP32: said on every CPU, and a warning where OpenVINO's default is BF16
    assert "cannot set the run-time precision fp32" in res.output
    assert ("NOT the FP32 that was tuned" in res.output) == cpu_features()["bf16"]
    res = CliRunner().invoke(cli.main, ["triton", "--config", str(fp32), "--repository", str(tmp_path / "repo4"),
                                        "--precision", "bf16"])
    assert res.exit_code == 2 and "--precision contradicts --config" in res.output
    ort = _config(tmp_path, graphs["fp32"], backend="onnxruntime", precision=None, computes="fp32")
    res = CliRunner().invoke(cli.main, ["triton", "--config", str(ort), "--repository", str(tmp_path / "repo2")])
    assert res.exit_code == 0, res.output
    text = next((tmp_path / "repo2").glob("*/config.pbtxt")).read_text()
    assert "count: 2" in text and 'platform: "onnxruntime_onnx"' in text


def test_a_model_file_that_changed_is_refused(tmp_path, graphs, monkeypatch):
    import deploy.commands.serve as serve_mod

    path = _config(tmp_path, graphs["fp32"])
    data = json.loads(path.read_text())
    data["files"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="tuned for another"):
        deploy.load(config=path)
    monkeypatch.setattr(serve_mod, "check_pytriton", lambda: None)
    res = CliRunner().invoke(cli.main, ["serve", "--config", str(path)])
    assert res.exit_code == 2 and "tuned for another convmlp_s.onnx" in res.output
    assert "Traceback" not in res.output


def test_a_config_from_another_machine_is_one_warning(tmp_path, graphs):
    other = {**machine_facts(), "cpu": "Some Other CPU 9000", "flags": ["avx2"]}
    path = _config(tmp_path, graphs["fp32"], backend="onnxruntime", precision=None, computes="fp32", machine=other)
    check = load_config(path)
    assert len(check.warnings) == 1 and "another machine (Some Other CPU 9000" in check.warnings[0]
    with deploy.load(config=path) as model:
        assert any("another machine" in n for n in model.notes)


@pytest.mark.parametrize("text, words", [
    ("{", "malformed: not JSON"),
    ('{"schema": "something/else", "version": 1}', "not a deployment written by"),
    ('{"schema": "convmlp-deploy/deployment", "version": 0}', "stale"),
    ('{"schema": "convmlp-deploy/deployment", "version": 1, "files": []}', "malformed"),
])
def test_malformed_foreign_and_stale_configs_are_one_line_exit_2(tmp_path, text, words, monkeypatch):
    import deploy.commands.serve as serve_mod

    monkeypatch.setattr(serve_mod, "check_pytriton", lambda: None)
    path = tmp_path / "deploy.json"
    path.write_text(text)
    res = CliRunner().invoke(cli.main, ["serve", "--config", str(path)])
    assert res.exit_code == 2 and words in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("Error")]) == 1


# --------------------------------------------------------------------------- bad input, exit codes


def test_bad_inputs_are_exit_2_before_any_work(tmp_path, graphs, photos):
    run = CliRunner().invoke
    out = tmp_path / "d.json"
    res = run(cli.main, ["tune", "--onnx", str(graphs["fp32"]), "-o", str(out)])
    assert res.exit_code == 2 and "--images DIR with at least 8" in res.output and "--gate grid" in res.output
    few = tmp_path / "few"
    make_photo_set(few, 3, sources=HELD_OUT_PHOTOS, size=(64, 64))
    res = run(cli.main, ["tune", "--onnx", str(graphs["fp32"]), "--images", str(few), "-o", str(out)])
    assert res.exit_code == 2 and "3 image(s), tune needs at least 8" in res.output
    res = run(cli.main, ["tune", "--onnx", str(graphs["fp32"]), "--images", str(photos), "--budget-s", "0.2",
                         "-o", str(out)])
    assert res.exit_code == 2 and "cannot hold one candidate" in res.output
    res = run(cli.main, ["tune", "--onnx", str(graphs["fp32"]), "--images", str(photos), "--shapes", "2x64",
                         "-o", str(out)])
    assert res.exit_code == 2 and "--shapes" in res.output
    assert not out.exists() and not (tmp_path / "d.models").exists()
    assert "Traceback" not in res.output


def test_every_graph_failing_its_gate_is_exit_3_with_the_table(tmp_path, graphs, photos):
    out = tmp_path / "d.json"
    res = CliRunner().invoke(cli.main, ["tune", "--onnx", str(graphs["damaged"]), "--gate", "grid",
                                        "--shapes", "64", "--budget-s", "60", "-o", str(out)])
    assert res.exit_code == 3, res.output
    assert "every candidate failed its accuracy gate on the synthetic grid" in res.output
    assert "dropped at gate" in res.output and "--gate grid" in res.output
    assert not out.exists()


def test_ctrl_c_writes_the_best_so_far_marked_partial_and_nothing_else(tmp_path, graphs, photos, monkeypatch):
    calls = itertools.count()
    real = search_mod.time_slice

    def interrupted(*args, **kw):
        if next(calls) == 2 * search_mod.ROUNDS:  # after the first comparison (2 slices a round)
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(search_mod, "time_slice", interrupted)
    folder = tmp_path / "out"
    folder.mkdir()
    out, table = folder / "deploy.json", folder / "t.csv"
    res = CliRunner().invoke(cli.main, ["tune", "--onnx", str(graphs["fp32"]), "--images", str(photos),
                                        "--shapes", "64", "--budget-s", "120", "-o", str(out), "--csv", str(table)])
    assert res.exit_code == 130, res.output
    data = json.loads(out.read_text())
    assert data["partial"] is True and data["search"]["coverage"]["stopped"] == "interrupted"
    assert sorted(p.name for p in folder.iterdir()) == ["deploy.json"]
    assert "marked partial" in res.output
    assert any("partial" in w for w in load_config(out).warnings)


# --------------------------------------------------------------------------- TensorRT, on the fakes' terms


def test_tensorrt_engines_are_searched_over_profiles_cuda_graphs_and_streams(tmp_path, graphs, monkeypatch):
    from deploy.commands.tune import trt as trt_mod
    from deploy.commands.tune.space import ModelChoice, build_space
    from deploy.modelfile import describe
    from deploy.modelfile.engine import EngineManifest, write_manifest

    workload = parse_workload("cycle:128,160x224")
    sets = trt_mod.profile_sets(workload, [1, 4])
    assert set(sets) == {"one", "per-size"}
    one = sets["one"][0]
    assert one.min == (1, 3, 128, 128) and one.max == (4, 3, 160, 224)
    assert [p.opt for p in sets["per-size"]] == [(4, 3, 128, 128), (4, 3, 160, 224)]

    built = []

    def fake_builder(onnx_path, profiles, options, output):
        built.append((Path(onnx_path).name, len(profiles)))
        Path(output).write_bytes(b"FAKEPLAN")
        write_manifest(EngineManifest(
            tensorrt_version="10.8.0.43", gpu_name="fake", compute_capability="9.0", cuda_version="12.8",
            precision="fp32", kind="classifier", variant="s", num_classes=1000, input_name="input",
            output_names=["logits"], profiles=list(profiles), onnx_sha256="0" * 64, onnx_path=str(onnx_path)), output)

    fp32 = ModelChoice(describe(graphs["fp32"]), file_sha256(graphs["fp32"]), graphs["fp32"])
    engines = trt_mod.build_engines([fp32], workload, [1, 4], tmp_path / "engines", builder=fake_builder)
    assert built == [("convmlp_s.onnx", 1), ("convmlp_s.onnx", 2)] and len(engines) == 2
    monkeypatch.setattr(space_mod, "_check", lambda name, options, cache: None)  # as on a GPU machine
    space = build_space([fp32, *engines], batches=[1], objective="throughput", cores=2, workload=workload,
                        variant_mode=False)
    trt = [c for c in space.candidates if c.backend == "tensorrt"]
    assert {(c.model.name, c.cuda_graph, c.streams) for c in trt} == {
        (e.name, g, s) for e in engines for g in (False, True) for s in (1, 2)}


def test_benchmark_config_remeasures_the_recorded_workload_as_tune_timed_it(tmp_path, graphs, monkeypatch):
    pytest.importorskip("openvino")
    from deploy.commands.tune.remeasure import measure_configs

    recorded = {"workload": {"spec": "cycle:64,64x96", "kind": "cycle", "sizes": ["64x64", "64x96"]},
                "objective": "latency", "p50_ms": 4.0, "passes_per_round": 2}
    path = _config(tmp_path, graphs["fp32"], streams=1, batching={"batch": 1, "max_batch": 1}, measured=recorded)
    res = CliRunner().invoke(cli.main, ["benchmark", "--config", str(path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    # 3 fresh processes (none recorded: the default), each 6 rounds x 2 passes x 2 sizes, each query timed;
    # a config that records only p50 (written before size_p50_ms): the ratio is the median process's p50
    # over the recorded one
    assert len(out["processes"]) == 3 and all(p["queries"] == 6 * 2 * 2 for p in out["processes"])
    assert out["passes_per_round"] == 2
    assert out["now"]["p50_ms"] == sorted(p["p50_ms"] for p in out["processes"])[1]
    assert out["ratio"] == pytest.approx(out["now"]["p50_ms"] / 4.0)
    assert out["process_ratios"] == pytest.approx([p["p50_ms"] / 4.0 for p in out["processes"]])
    ps = [p["p50_ms"] for p in out["processes"]]
    assert out["process_spread"] == pytest.approx(max(ps) / min(ps))
    assert (out["unsteady"] is None) == (out["process_spread"] <= figures_mod.UNSTEADY_SPREAD)
    assert "now" in CliRunner().invoke(cli.main, ["benchmark", "--config", str(path)]).output
    # one that records the per-size p50 is judged by it, the median process by it
    (tmp_path / "new").mkdir()
    new = _config(tmp_path / "new", graphs["fp32"], streams=1, batching={"batch": 1, "max_batch": 1},
                  measured={**recorded, "size_p50_ms": 5.0, "processes": 3})
    out = json.loads(CliRunner().invoke(cli.main, ["benchmark", "--config", str(new), "--json"]).stdout)
    assert out["figure"] == "size_p50_ms" and out["recorded"]["size_p50_ms"] == 5.0
    assert out["now"]["size_p50_ms"] == sorted(p["size_p50_ms"] for p in out["processes"])[1]
    assert out["ratio"] == pytest.approx(out["now"]["size_p50_ms"] / 5.0)

    res = CliRunner().invoke(cli.main, ["benchmark", "--config", str(path), "--threads", "2"])
    assert res.exit_code == 2 and "--threads contradicts --config" in res.output
    (tmp_path / "bare").mkdir()
    bare = _config(tmp_path / "bare", graphs["fp32"], measured={})
    res = CliRunner().invoke(cli.main, ["benchmark", "--config", str(bare)])
    assert res.exit_code == 2 and "records no workload" in res.output and "Traceback" not in res.output

    # a config whose model path is relative to its own folder, timed from another folder: one process as
    # recorded; a recorded process count that is not a whole number is one line, exit 2
    import shutil

    (tmp_path / "rel" / "models").mkdir(parents=True)
    local = tmp_path / "rel" / "models" / graphs["fp32"].name
    shutil.copy(graphs["fp32"], local)
    rel = _config(tmp_path / "rel", local, streams=1, batching={"batch": 1, "max_batch": 1},
                  measured={**recorded, "processes": 1, "passes_per_round": 1})
    assert json.loads(rel.read_text())["files"][0]["path"] == f"models/{local.name}"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = CliRunner().invoke(cli.main, ["benchmark", "--config", str(rel), "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["processes"]) == 1
    data = json.loads(rel.read_text())
    data["measured"]["processes"] = "three"
    rel.write_text(json.dumps(data))
    res = CliRunner().invoke(cli.main, ["benchmark", "--config", str(rel)])
    assert res.exit_code == 2 and "measured.processes must be a whole number" in res.output
    assert "Traceback" not in res.output

    # several deployments interleaved: each timed on every round, its own batch
    cfgs = [read_config(path), replace(read_config(path), batching={"batch": 2, "max_batch": 2})]
    figs = measure_configs(cfgs, parse_workload("cycle:64"), rounds=3, passes=1)
    assert [f.queries for f in figs] == [3, 3]
    assert figs[1].images_per_s > 0 and figs[1].ms_per_mpx > 0
