"""deploy.commands.bench: pure statistics, the timing loop (fake runners and a fake clock),
target checks, reports, and real torch / onnxruntime runs at tiny size. No timing asserts."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploy.commands.bench import (
    BenchReport,
    BenchUsageError,
    Case,
    TimingConfig,
    check_cases,
    expand_sweep,
    macs_per_image,
    parse_percentiles,
    prepare,
    resolve_target,
    run_benchmark,
    summarize_case,
    time_case,
)
from deploy.commands.bench import stats as S
from deploy.commands.bench import timing as T
from deploy.errors import DeployError
from deploy.runners.base import Runner

# --------------------------------------------------------------------------- pure statistics


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_percentiles_and_summary_match_numpy(n: int) -> None:
    values = np.random.default_rng(n).lognormal(size=n).tolist()
    qs = (0.0, 1.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0)
    for q in qs:
        assert S.percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)
    s = S.summarize(values, qs)
    assert s.count == n
    assert s.min == min(values) and s.max == max(values)
    assert s.mean == pytest.approx(np.mean(values))
    assert s.median == pytest.approx(np.median(values))
    assert s.std == pytest.approx(np.std(values))
    assert s.cv == pytest.approx(np.std(values) / np.mean(values) if n > 1 else 0.0)
    assert s.percentiles["p99.9"] == pytest.approx(np.percentile(values, 99.9))
    assert list(s.percentiles) == ["p0", "p1", "p50", "p90", "p95", "p99", "p99.9", "p100"]


def test_percentile_and_summary_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        S.percentile([1.0], 101)
    with pytest.raises(ValueError):
        S.summarize([])
    with pytest.raises(ValueError):
        S.summarize([1.0, float("nan")])


def test_coefficient_of_variation() -> None:
    assert S.coefficient_of_variation([5.0, 5.0, 5.0]) == 0.0
    assert S.coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)  # std 1 / mean 2
    assert S.coefficient_of_variation([4.0]) == 0.0


def test_parse_percentiles() -> None:
    assert parse_percentiles("90,95,99") == (90.0, 95.0, 99.0)
    assert parse_percentiles(" 99.9 , 50,50") == (99.9, 50.0)
    for bad in ("", "0", "101", "90,abc", "-5", "nan"):
        with pytest.raises(ValueError):
            parse_percentiles(bad)


def test_tflops_and_peak_fraction_arithmetic() -> None:
    assert S.achieved_tflops(2.4e9, 1000.0) == pytest.approx(4.8)
    assert S.achieved_tflops(1e12, 0.5) == pytest.approx(1.0)
    assert S.peak_fraction(4.8, 96.0) == pytest.approx(0.05)
    assert S.peak_fraction(4.8, None) is None and S.peak_fraction(None, 10.0) is None
    assert S.throughput(30, 1.5) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        S.throughput(3, 0.0)


def _stats(median: float, cv: float = 0.0) -> S.TimeStats:
    # two values median*(1 -/+ cv) have mean = median and population CV = cv
    return S.summarize([median * (1 - cv), median * (1 + cv)])


def _codes(ws: list[S.PerfWarning]) -> set[str]:
    return {w.code for w in ws}


def test_unstable_threshold_on_latency_or_compute() -> None:
    assert _codes(S.diagnose(_stats(10, 0.051))) == {"unstable"}
    assert _codes(S.diagnose(_stats(10, 0.049))) == set()
    # with a compute series, stability is judged on compute, not on the (noisier) latency
    assert _codes(S.diagnose(_stats(10, 0.2), compute=_stats(8, 0.01))) == set()
    assert "unstable" in _codes(S.diagnose(_stats(10, 0.0), compute=_stats(8, 0.06)))
    assert _codes(S.diagnose(_stats(10, 0.03), unstable_cv=0.02)) == {"unstable"}


def test_enqueue_bound_threshold_and_hint() -> None:
    lat, compute = _stats(12), _stats(10)
    ws = S.diagnose(lat, compute=compute, enqueue=_stats(8.1), enqueue_hint="try --cuda-graph")
    assert _codes(ws) == {"enqueue-bound"} and "--cuda-graph" in ws[0].message
    assert _codes(S.diagnose(lat, compute=compute, enqueue=_stats(7.9))) == set()
    # host-synchronous backends have no compute series: never enqueue-bound
    assert _codes(S.diagnose(lat, enqueue=_stats(100))) == set()


def test_transfer_bound_threshold() -> None:
    lat, compute = _stats(20), _stats(10)
    assert _codes(S.diagnose(lat, compute=compute, h2d=_stats(6), d2h=_stats(4.5))) == {"transfer-bound"}
    assert _codes(S.diagnose(lat, compute=compute, h2d=_stats(6), d2h=_stats(3.5))) == set()


# --------------------------------------------------------------------------- sweeps and config


def test_expand_sweep_is_resolution_major_and_deduplicated() -> None:
    cases = expand_sweep([1, 8, 1], [(224, 224), (320, 640)])
    assert [(c.batch, c.height, c.width) for c in cases] == [(1, 224, 224), (8, 224, 224), (1, 320, 640), (8, 320, 640)]
    assert cases[2].pixels == 320 * 640 and cases[2].shape == (1, 3, 320, 640)
    with pytest.raises(ValueError, match=">= 32"):
        expand_sweep([1], [(31, 224)])
    with pytest.raises(ValueError):
        expand_sweep([0], [(224, 224)])
    with pytest.raises(ValueError):
        expand_sweep([], [(224, 224)])


@pytest.mark.parametrize(
    "kwargs", [{"duration_s": 0.0}, {"iterations": 0}, {"warmup_s": -1.0}, {"buffers": 0}, {"duration_s": None}]
)
def test_timing_config_refuses_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TimingConfig(**kwargs)


# --------------------------------------------------------------------------- the loop, with fakes


class FakeClock:
    """Integer milliseconds, so comparisons with the loop's thresholds are exact."""

    def __init__(self) -> None:
        self.ms = 0

    def advance(self, ms: int) -> None:
        self.ms += ms

    def __call__(self) -> float:
        return self.ms / 1000


class FakeRunner(Runner):
    """Host-synchronous unless given a stream; each step advances the fake clock."""

    name = "fake"

    def __init__(self, clock: FakeClock, *, load_ms: int = 0, run_ms: int = 10, fetch_ms: int = 0,
                 stream: Any = None) -> None:
        super().__init__()
        self.clock, self.load_ms, self.run_ms, self.fetch_ms = clock, load_ms, run_ms, fetch_ms
        self.stream = stream
        self.seen: list[np.ndarray] = []
        self.calls = {"load": 0, "run": 0, "sync": 0, "fetch": 0}

    @property
    def output_names(self) -> list[str]:
        return ["logits"]

    def activate(self) -> None:
        pass

    def load_input(self, x: np.ndarray) -> np.ndarray:
        self.calls["load"] += 1
        self.seen.append(x)
        self.clock.advance(self.load_ms)
        return x

    def run(self, handle: np.ndarray) -> None:
        self.calls["run"] += 1
        self.clock.advance(self.run_ms)

    def synchronize(self) -> None:
        self.calls["sync"] += 1

    def fetch(self) -> dict[str, np.ndarray]:
        self.calls["fetch"] += 1
        self.clock.advance(self.fetch_ms)
        return {"logits": np.zeros((1, 10), np.float32)}


class FakeEvent:
    """Stands in for torch.cuda.Event: records the fake clock."""

    clock: FakeClock

    def record(self, stream: Any = None) -> None:
        self.t = self.clock()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.t - self.t) * 1e3


@pytest.fixture
def fake_events(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock()

    def make() -> FakeEvent:
        e = FakeEvent()
        e.clock = clock
        return e

    monkeypatch.setattr(T, "event_factory", make)
    return clock


def test_iterations_mode_runs_exactly_n_after_a_timed_warmup() -> None:
    clock = FakeClock()
    r = FakeRunner(clock, run_ms=10)
    raw = time_case(r, (1, 3, 32, 32), TimingConfig(warmup_s=0.05, iterations=7), clock=clock)
    assert raw.warmup_iterations == 5  # 5 x 10 ms reaches 50 ms
    assert raw.iterations == 7 and raw.queries == 7
    assert r.calls == {"load": 12, "run": 12, "sync": 12, "fetch": 12}
    assert raw.latency_ms == pytest.approx([10.0] * 7)
    assert raw.wall_s == pytest.approx(0.07) and raw.warmup_s == pytest.approx(0.05)
    assert not raw.gpu_timed and raw.enqueue_ms == []


def test_warmup_runs_at_least_once() -> None:
    clock = FakeClock()
    r = FakeRunner(clock)
    raw = time_case(r, (1, 3, 32, 32), TimingConfig(warmup_s=0.0, iterations=2), clock=clock)
    assert raw.warmup_iterations == 1 and r.calls["run"] == 3


def test_duration_mode_honours_duration_and_min_iterations() -> None:
    clock = FakeClock()
    raw = time_case(FakeRunner(clock, run_ms=10), (1, 3, 32, 32),
                    TimingConfig(warmup_s=0.0, duration_s=0.195, min_iterations=1), clock=clock)
    assert raw.iterations == 20 and raw.wall_s == pytest.approx(0.2)  # the first iteration past 0.195 s
    clock = FakeClock()
    raw = time_case(FakeRunner(clock, run_ms=10), (1, 3, 32, 32),
                    TimingConfig(warmup_s=0.0, duration_s=0.195, min_iterations=30), clock=clock)
    assert raw.iterations == 30  # the duration passed first, the minimum count still holds


def test_inputs_rotate_through_distinct_buffers() -> None:
    clock = FakeClock()
    r = FakeRunner(clock)
    time_case(r, (2, 3, 32, 40), TimingConfig(warmup_s=0.0, iterations=8, buffers=3), clock=clock)
    ids = [id(x) for x in r.seen]
    assert len(set(ids)) == 3
    assert all(ids[i] == ids[i + 3] for i in range(len(ids) - 3))
    assert all(ids[i] != ids[i + 1] for i in range(len(ids) - 1))
    first = r.seen[:3]
    assert all(x.shape == (2, 3, 32, 40) and x.dtype == np.float32 for x in first)
    assert not np.array_equal(first[0], first[1])


def test_progress_rises_to_one() -> None:
    clock = FakeClock()
    seen: list[float] = []
    time_case(FakeRunner(clock), (1, 3, 32, 32), TimingConfig(warmup_s=0.02, iterations=4),
              clock=clock, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_stream_runners_are_timed_with_events(fake_events: FakeClock) -> None:
    clock = fake_events
    r = FakeRunner(clock, load_ms=2, run_ms=5, fetch_ms=1, stream=object())
    raw = time_case(r, (1, 3, 32, 32), TimingConfig(warmup_s=0.0, iterations=4), clock=clock)
    assert raw.gpu_timed
    assert raw.h2d_ms == pytest.approx([2.0] * 4)
    assert raw.compute_ms == pytest.approx([5.0] * 4)
    assert raw.d2h_ms == pytest.approx([1.0] * 4)
    assert raw.enqueue_ms == pytest.approx([5.0] * 4)
    assert raw.latency_ms == pytest.approx([8.0] * 4)  # H2D + compute + D2H, as trtexec
    result = summarize_case(raw, Case(1, 32, 32), runner="fake", backend="tensorrt", variant=None, device="cuda",
                            precision="fp16", macs_per_image=None, percentiles=(99,))
    assert result.compute is not None and result.compute.median == pytest.approx(5.0)
    assert "enqueue-bound" in {w.code for w in result.warnings}  # a host-synchronous fake run is all enqueue


def test_several_stream_runners_each_answer_every_iteration(fake_events: FakeClock) -> None:
    clock = fake_events
    rs = [FakeRunner(clock, run_ms=3, stream=object()) for _ in range(3)]
    raw = time_case(rs, (1, 3, 32, 32), TimingConfig(warmup_s=0.0, iterations=5), clock=clock)
    assert raw.iterations == 5 and raw.queries == 15
    assert all(r.calls["run"] == 6 for r in rs)


def test_several_host_runners_are_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="stream"):
        time_case([FakeRunner(clock), FakeRunner(clock)], (1, 3, 32, 32), TimingConfig(iterations=1), clock=clock)


def test_a_concurrent_runner_takes_one_query_per_stream_at_once() -> None:
    """OpenVINO's --streams: one runner, N queries in flight, each timed on its own thread."""
    import threading
    import time as _time

    class Concurrent(Runner):
        name, concurrent = "concurrent", True

        def __init__(self) -> None:
            super().__init__()
            self.inflight = self.peak = 0
            self.lock = threading.Lock()
            self.local = threading.local()

        @property
        def output_names(self) -> list[str]:
            return ["logits"]

        def activate(self) -> None:
            pass

        def load_input(self, x: np.ndarray) -> np.ndarray:
            return x

        def run(self, handle: np.ndarray) -> None:
            with self.lock:
                self.inflight += 1
                self.peak = max(self.peak, self.inflight)
            _time.sleep(0.02)
            with self.lock:
                self.inflight -= 1
            self.local.out = handle

        def fetch(self) -> dict[str, np.ndarray]:
            return {"logits": self.local.out}

    r = Concurrent()
    raw = time_case([r] * 3, (1, 3, 32, 32), TimingConfig(warmup_s=0.0, iterations=4))
    assert raw.queries == 12 and r.peak == 3  # three queries really were in flight together


def test_summary_throughput_images_and_tflops() -> None:
    clock = FakeClock()
    raw = time_case(FakeRunner(clock, run_ms=20), (4, 3, 64, 64), TimingConfig(warmup_s=0.0, iterations=10),
                    clock=clock)
    result = summarize_case(raw, Case(4, 64, 64), runner="fake", backend="torch", variant="s", device="cpu",
                            precision="fp32", macs_per_image=10**9, percentiles=(50, 90), peak_tflops=1.0)
    assert result.queries_per_s == pytest.approx(50.0)  # 10 queries in 0.2 s
    assert result.images_per_s == pytest.approx(4 * result.queries_per_s)
    assert result.tflops == pytest.approx(2 * 1e9 * result.images_per_s / 1e12)
    assert result.peak_fraction == pytest.approx(result.tflops)
    d = result.to_dict()
    assert d["gmacs_per_query"] == pytest.approx(4.0) and d["latency_ms"]["percentiles"].keys() == {"p50", "p90"}
    raw.wall_s = 0.0
    with pytest.raises(DeployError):
        summarize_case(raw, Case(4, 64, 64), runner="fake", backend="torch", variant="s", device="cpu",
                       precision="fp32", macs_per_image=None, percentiles=(50,))


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    "kwargs, backend, device",
    [
        ({"variant": "s"}, "torch", "cpu"),
        ({"onnx": "m.onnx"}, "onnxruntime", "cpu"),
        ({"onnx": "m.onnx", "variant": "s", "device": "cuda"}, "onnxruntime", "cuda"),
        ({"engine": "m.engine"}, "tensorrt", "cuda"),
        ({"engine": "m.engine", "backend": "tensorrt", "cuda_graph": True, "streams": 2}, "tensorrt", "cuda"),
        ({"onnx": "m.onnx", "backend": "openvino", "streams": 2}, "openvino", "cpu"),
    ],
)
def test_backend_is_inferred(kwargs: dict[str, Any], backend: str, device: str) -> None:
    t = resolve_target(**kwargs)
    assert t.backend == backend and t.device == device
    assert t.precision == ("fp32" if backend == "torch" else None)
    assert t.runtime_precision == ("auto" if backend == "openvino" else None)


def test_openvino_precision_and_what_a_run_reports() -> None:
    from deploy.precision import run_precision as effective_precision

    assert resolve_target(onnx="m.onnx", backend="openvino", precision="bf16").runtime_precision == "bf16"
    # any name deploy.precision reads, canonicalised once by the loader (benchmarks/bench_cpu_backends.py asks f32)
    f32 = resolve_target(onnx="m.onnx", backend="openvino", precision="f32")
    assert f32.runtime_precision == "fp32" and f32.to_dict()["runtime_precision"] == "fp32"
    assert effective_precision("fp32", "bf16") == "bf16"
    assert effective_precision("int8", "bf16") == "int8+bf16"
    assert effective_precision("fp16", None) == "fp16" and effective_precision("fp32", "fp32") == "fp32"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "nothing to benchmark"),
        ({"onnx": "a.onnx", "engine": "b.engine"}, "not both"),
        ({"onnx": "a.onnx", "backend": "torch"}, "contradicts --onnx"),
        ({"engine": "a.engine", "backend": "onnxruntime"}, "contradicts --engine"),
        ({"variant": "s", "backend": "onnxruntime"}, "needs --onnx"),
        ({"variant": "s", "backend": "tensorrt"}, "needs --engine"),
        ({"backend": "torch"}, "needs --variant"),
        ({"variant": "s", "precision": "fp16"}, "needs --device cuda"),
        ({"onnx": "a.onnx", "precision": "fp16"}, "its onnx file was built with"),
        ({"engine": "a.engine", "device": "cpu"}, "tensorrt runs on cuda, not --device cpu"),
        ({"variant": "s", "cuda_graph": True}, "--cuda-graph"),
        ({"variant": "s", "streams": 2}, "--streams"),
        ({"onnx": "a.onnx", "compile": True}, "--compile"),
        ({"onnx": "a.onnx", "weights": "w.pth"}, "--weights"),
        ({"onnx": "a.onnx", "backend": "openvino", "device": "cuda"}, "openvino runs on cpu, not --device cuda"),
        ({"onnx": "a.onnx", "backend": "openvino", "precision": "int8"}, "offers --precision"),
        ({"engine": "a.engine", "backend": "openvino"}, "contradicts --engine"),
        ({"variant": "s", "backend": "openvino"}, "openvino needs --onnx"),
        ({"onnx": "a.onnx", "streams": 2}, "--streams"),
        ({"variant": "s", "backend": "tvm"}, "unknown backend 'tvm'"),
    ],
)
def test_contradictions_are_usage_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BenchUsageError, match=message):
        resolve_target(**kwargs)


@pytest.fixture
def fake_engine(make_engine) -> Path:
    """Batch 1..16, sides 128..256."""
    return make_engine(profile=((1, 3, 128, 128), (8, 3, 224, 224), (16, 3, 256, 256)))


def test_engine_profiles_bound_the_cases(fake_engine: Path) -> None:
    target = resolve_target(engine=fake_engine)
    done = check_cases(target, [Case(16, 224, 224), Case(1, 128, 256)])
    assert done.variant == "s" and done.precision == "fp16"
    with pytest.raises(BenchUsageError, match="largest batch 16") as err:
        check_cases(target, [Case(32, 224, 224)])
    assert "1x3x128x128:8x3x224x224:16x3x256x256" in str(err.value)
    with pytest.raises(BenchUsageError, match="outside every profile"):
        check_cases(target, [Case(1, 224, 224), Case(1, 512, 512)])
    with pytest.raises(BenchUsageError, match="contradicts the engine manifest"):
        check_cases(resolve_target(engine=fake_engine, variant="l"), [Case(1, 224, 224)])


def test_macs_scale_with_pixels_and_match_the_profiler() -> None:
    from convmlp.profile import profile_variant

    assert macs_per_image("s", 96, 64) == profile_variant("s", [(96, 64)])[0].macs  # meta device == real count
    assert macs_per_image("s", 64, 128) < macs_per_image("s", 128, 128) < macs_per_image("s", 224, 224)


# --------------------------------------------------------------------------- real runners, tiny


def test_torch_backend_end_to_end_on_cpu() -> None:
    target = prepare(resolve_target(variant="s", threads=1), expand_sweep([2], [(64, 64)]))
    report = run_benchmark(target, expand_sweep([2], [(64, 64)]), TimingConfig(warmup_s=0.0, iterations=3),
                           percentiles=(50, 99), peak_tflops=1.0)
    (r,) = report.results
    assert r.runner == "torch[cpu,fp32]" and r.queries == 3 and r.batch == 2
    assert r.images_per_s == pytest.approx(2 * r.queries_per_s)
    assert r.gmacs == pytest.approx(macs_per_image("s", 64, 64) / 1e9)
    assert r.compute is None  # host-timed on CPU
    data = json.loads(report.to_json())
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert data["versions"]["torch"] and data["versions"]["python"]
    assert data["settings"]["timing"]["iterations"] == 3


def test_onnxruntime_backend_on_a_tiny_export(tmp_path: Path, s_onnx) -> None:
    pytest.importorskip("onnxruntime")

    path = s_onnx(tmp_path / "s.onnx")
    cases = expand_sweep([1, 3], [(64, 96)])
    target = prepare(resolve_target(onnx=path, variant="s", threads=1), cases)
    assert target.precision == "fp32"
    report = run_benchmark(target, cases, TimingConfig(warmup_s=0.0, iterations=2))
    assert [r.batch for r in report.results] == [1, 3]
    for r in report.results:
        assert r.runner.startswith("onnxruntime") and r.variant == "s" and r.queries == 2
        assert r.images_per_s == pytest.approx(r.batch * r.queries_per_s)
        assert r.tflops == pytest.approx(2 * macs_per_image("s", 64, 96) * r.images_per_s / 1e12)


# --------------------------------------------------------------------------- report renderings


def _report() -> BenchReport:
    clock = FakeClock()
    rep = BenchReport(machine={"cpu": "Fake CPU", "cores": 2, "usable_cores": 2, "gpu": None},
                      versions={"python": "3.x", "torch": "2.x"}, settings={"timing": {"iterations": 5}})
    for b, ms in ((1, 10), (4, 30)):
        raw = time_case(FakeRunner(clock, run_ms=ms), (b, 3, 64, 64), TimingConfig(warmup_s=0.0, iterations=5),
                        clock=clock)
        rep.results.append(summarize_case(raw, Case(b, 64, 64), runner="fake", backend="torch", variant="s",
                                          device="cpu", precision="fp32", macs_per_image=10**8, percentiles=(99,)))
    return rep


def test_markdown_and_csv_have_one_row_per_case() -> None:
    rep = _report()
    md = rep.to_markdown("T")
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 and "p99 ms" in table[0] and "Fake CPU" in md
    rows = list(csv.DictReader(io.StringIO(rep.to_csv())))
    assert [int(r["batch"]) for r in rows] == [1, 4]
    assert float(rows[1]["ips"]) == pytest.approx(4 * float(rows[1]["qps"]))
    assert "compute_ms" in rows[0] and rows[0]["compute_ms"] == ""


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from deploy.commands.bench import plot_report

    out = plot_report(_report(), tmp_path / "sub" / "bench.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["bench.png"]  # no temp file left behind
