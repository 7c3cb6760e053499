"""deploy.commands.bench.interleave: A/B timing that a drifting machine cannot bias (fake clock),
and one real torch-vs-onnxruntime comparison at tiny size. No timing asserts."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from deploy.commands.bench import TimingConfig, expand_sweep, prepare, resolve_target, time_case
from deploy.commands.bench.interleave import run_interleaved, time_interleaved
from tests.deploy.test_benchmark import FakeClock, FakeRunner

SHAPE = (1, 3, 32, 32)


class DriftingRunner(FakeRunner):
    """A query costs ``run_ms`` times the machine's slowness at that moment, plus ``switch_ms``
    on the first query after another runner ran (a cold cache, the other runtime's spinning threads)."""

    last: list[DriftingRunner | None] = [None]

    def __init__(self, clock: FakeClock, run_ms: int, slowdown_at_ms: int, *, switch_ms: int = 0) -> None:
        super().__init__(clock, run_ms=run_ms)
        self.slowdown_at_ms, self.switch_ms = slowdown_at_ms, switch_ms

    def run(self, handle: np.ndarray) -> None:
        self.calls["run"] += 1
        slow = 3 if self.clock.ms >= self.slowdown_at_ms else 1
        switched = DriftingRunner.last[0] is not self
        DriftingRunner.last[0] = self
        self.clock.advance(self.run_ms * slow + (self.switch_ms if switched else 0))


@pytest.fixture(autouse=True)
def _fresh_switch_state():
    DriftingRunner.last[0] = None
    yield


def test_interleaving_cancels_drift_that_biases_back_to_back_timing() -> None:
    # B is exactly 2x faster than A; the machine gets 3x slower after 2 s.
    cfg = TimingConfig(warmup_s=0.0, duration_s=2.0, min_iterations=1)

    clock = FakeClock()
    a, b = DriftingRunner(clock, 20, 2000), DriftingRunner(clock, 10, 2000)
    back_to_back = (statistics.median(time_case(a, SHAPE, cfg, clock=clock).latency_ms)
                    / statistics.median(time_case(b, SHAPE, cfg, clock=clock).latency_ms))
    assert back_to_back < 1.0  # B looks slower than A: the drift, not the runtimes

    clock = FakeClock()
    a, b = DriftingRunner(clock, 20, 2000), DriftingRunner(clock, 10, 2000)
    got = time_interleaved([a, b], SHAPE, cfg, rounds=10, clock=clock)
    ratios = got.ratios(0, 1)
    assert len(ratios) == 10 and all(len(m) == 10 for m in got.round_medians)
    assert statistics.median(ratios) == pytest.approx(2.0)
    assert sum(r == pytest.approx(2.0) for r in ratios) >= 9  # only a round that straddles the change may differ
    # each runner got about the budget it would get alone, split over the rounds
    for raw in got.raws:
        assert 2.0 <= raw.wall_s <= 2.6 and raw.queries == len(raw.latency_ms) == raw.iterations


def test_the_first_query_after_a_switch_is_never_timed() -> None:
    clock = FakeClock()
    a = DriftingRunner(clock, 10, 10**9, switch_ms=500)
    b = DriftingRunner(clock, 5, 10**9, switch_ms=500)
    got = time_interleaved([a, b], SHAPE, TimingConfig(warmup_s=0.0, iterations=12), rounds=4, clock=clock)
    assert max(got.raws[0].latency_ms) == pytest.approx(10) and max(got.raws[1].latency_ms) == pytest.approx(5)
    assert got.raws[0].queries == got.raws[1].queries == 12  # 4 rounds x 3
    # untimed: the initial warm-up (one untimed, one timed and dropped) plus one query per slice
    assert got.raws[0].warmup_iterations == 4 and a.calls["run"] == 2 + 12 + 4


def test_order_alternates_between_rounds() -> None:
    clock = FakeClock()
    seen: list[str] = []

    class Logged(FakeRunner):
        def __init__(self, tag: str) -> None:
            super().__init__(clock, run_ms=1)
            self.tag = tag

        def run(self, handle: np.ndarray) -> None:
            if not seen or seen[-1] != self.tag:
                seen.append(self.tag)
            super().run(handle)

    time_interleaved([Logged("a"), Logged("b"), Logged("c")], SHAPE,
                     TimingConfig(warmup_s=0.0, iterations=3), rounds=3, clock=clock)
    # warm-up a b c, then rounds a b c | c b a | a b c (runs of the same runner merge)
    assert "".join(seen) == "abc" + "abc" + "ba" + "bc"


@pytest.mark.parametrize(
    ("runners", "rounds", "match"),
    [(1, 3, "at least two"), (2, 0, "rounds must be")],
)
def test_bad_requests(runners: int, rounds: int, match: str) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match=match):
        time_interleaved([FakeRunner(clock) for _ in range(runners)], SHAPE,
                         TimingConfig(warmup_s=0.0, iterations=2), rounds=rounds, clock=clock)


def test_targets_on_different_devices_are_refused() -> None:
    cpu = resolve_target(variant="s", threads=1)
    cuda = resolve_target(variant="s", device="cuda")
    with pytest.raises(ValueError, match="different devices"):
        run_interleaved([cpu, cuda], expand_sweep([1], [(64, 64)]), TimingConfig(iterations=1))
    with pytest.raises(ValueError, match="two targets"):
        run_interleaved([cpu], expand_sweep([1], [(64, 64)]), TimingConfig(iterations=1))


def test_torch_against_onnxruntime_for_real(tmp_path: Path, s_onnx) -> None:
    pytest.importorskip("onnxruntime")

    path = s_onnx(tmp_path / "s.onnx")
    cases = expand_sweep([1, 2], [(64, 96)])
    targets = [prepare(resolve_target(variant="s", threads=1), cases),
               prepare(resolve_target(variant="s", onnx=path, threads=1), cases)]
    report, speedups = run_interleaved(targets, cases, TimingConfig(warmup_s=0.0, iterations=4), rounds=2,
                                       peak_tflops=1.0)
    assert [(r.backend, r.batch, r.queries) for r in report.results] == [
        ("torch", 1, 4), ("onnxruntime", 1, 4), ("torch", 2, 4), ("onnxruntime", 2, 4)]
    assert report.settings["rounds"] == 2 and len(report.settings["targets"]) == 2
    assert all(r.peak_fraction is not None and r.gmacs for r in report.results)
    assert [(s.baseline, s.other, s.case.batch, s.rounds) for s in speedups] == [
        ("torch[cpu,fp32]", "onnxruntime[CPU]", 1, 2), ("torch[cpu,fp32]", "onnxruntime[CPU]", 2, 2)]
    for s in speedups:
        assert 0 < s.low <= s.median <= s.high
        assert s.to_dict()["speedup_median"] == s.median
