"""A/B timing with the runtimes interleaved, for speed-up figures a drifting machine cannot bias.

Timing runtime A for a minute and then runtime B for a minute puts any change in
the machine's speed between the two minutes (a shared VM's neighbours, turbo,
thermal state) straight into the A/B ratio. Here each case is cut into short
rounds; in every round each runner gets one slice of the time budget, the order
alternating from round to round (A B, B A, ...), and each slice starts with one
untimed query so that the previous runtime's spinning threads and cold caches do
not land in the numbers. The speed-up is then the median over rounds of the
per-round ratio of median latencies, and its spread over rounds says how far to
trust it.

    >>> from deploy.commands.bench import TimingConfig, expand_sweep, resolve_target
    >>> from deploy.commands.bench.interleave import run_interleaved
    >>> targets = [resolve_target(variant="s", backend="torch", threads=2),
    ...            resolve_target(variant="s", onnx="convmlp_s.onnx", threads=2)]
    >>> report, speedups = run_interleaved(targets, expand_sweep([1], [(224, 224)]), TimingConfig())
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from ...machine import machine_info, versions
from ...runners.base import Runner
from .report import BenchReport, summarize_target
from .stats import DEFAULT_PERCENTILES
from .targets import BenchTarget, open_runners
from .timing import Case, Clock, RawTimings, TimingConfig, time_case

__all__ = ["Interleaved", "Speedup", "time_interleaved", "run_interleaved"]

_LISTS = ("latency_ms", "host_ms", "h2d_ms", "compute_ms", "d2h_ms", "enqueue_ms")


@dataclass
class Interleaved:
    """What ``time_interleaved`` measured: per runner, all rounds merged, and each round's median."""

    raws: list[RawTimings]
    round_medians: list[list[float]] = field(default_factory=list)  # [runner][round], ms

    def ratios(self, baseline: int, other: int) -> list[float]:
        """Per round: ``baseline``'s median latency over ``other``'s (> 1: ``other`` is faster)."""
        return [b / o for b, o in zip(self.round_medians[baseline], self.round_medians[other], strict=True)]


def _slice_config(config: TimingConfig, rounds: int) -> TimingConfig:
    """One round's share of ``config``: no timed warm-up (one untimed query still runs)."""
    if config.iterations is not None:
        return TimingConfig(warmup_s=0.0, iterations=max(1, -(-config.iterations // rounds)),
                            buffers=config.buffers, seed=config.seed)
    return TimingConfig(warmup_s=0.0, duration_s=float(config.duration_s or 0.0) / rounds,
                        min_iterations=max(1, -(-config.min_iterations // rounds)),
                        buffers=config.buffers, seed=config.seed)


def _merge(into: RawTimings, part: RawTimings) -> None:
    for name in _LISTS:
        getattr(into, name).extend(getattr(part, name))
    into.iterations += part.iterations
    into.queries += part.queries
    into.wall_s += part.wall_s
    into.warmup_iterations += part.warmup_iterations
    into.warmup_s += part.warmup_s


def time_interleaved(
    runners: Sequence[Runner],
    shape: Sequence[int],
    config: TimingConfig,
    *,
    rounds: int = 10,
    clock: Clock = time.perf_counter,
) -> Interleaved:
    """Time ``shape`` on each active runner in ``rounds`` alternating slices of ``config``'s budget.

    Each runner first warms up for ``config.warmup_s`` (untimed). The budget of one
    runner (``duration_s`` or ``iterations``, and ``min_iterations``) is split evenly
    over the rounds (at least one timed query per round), so every runner is timed
    for about as long as ``time_case`` would time it alone.
    """
    runners = list(runners)
    if len(runners) < 2:
        raise ValueError("interleaved timing needs at least two runners")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    warm = TimingConfig(warmup_s=config.warmup_s, iterations=1, buffers=config.buffers, seed=config.seed)
    for r in runners:
        time_case(r, shape, warm, clock=clock)
    per_round = _slice_config(config, rounds)
    result = Interleaved(raws=[RawTimings() for _ in runners], round_medians=[[] for _ in runners])
    for k in range(rounds):
        order = range(len(runners)) if k % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            part = time_case(runners[i], shape, per_round, clock=clock)
            _merge(result.raws[i], part)
            result.round_medians[i].append(statistics.median(part.latency_ms))
    return result


@dataclass(frozen=True)
class Speedup:
    """How many times faster ``other`` ran than ``baseline`` on one case, over the rounds."""

    baseline: str
    other: str
    variant: str | None
    case: Case
    median: float
    low: float
    high: float
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline, "other": self.other, "variant": self.variant,
            "batch": self.case.batch, "height": self.case.height, "width": self.case.width,
            "speedup_median": self.median, "speedup_min": self.low, "speedup_max": self.high,
            "rounds": self.rounds,
        }


def run_interleaved(
    targets: Sequence[BenchTarget],
    cases: Sequence[Case],
    timing: TimingConfig,
    *,
    rounds: int = 10,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    peak_tflops: float | None = None,
) -> tuple[BenchReport, list[Speedup]]:
    """Open every target once, time each case interleaved; speed-ups are against ``targets[0]``.

    All targets must run on one device (they share it while being compared).
    """
    if len(targets) < 2:
        raise ValueError("a comparison needs at least two targets")
    devices = {t.device for t in targets}
    if len(devices) != 1:
        raise ValueError(f"targets run on different devices ({', '.join(sorted(devices))}): compare on one")
    report = BenchReport(
        machine=machine_info(targets[0].device),
        versions=versions(),
        settings={
            "targets": [t.to_dict() for t in targets],
            "timing": timing.to_dict(),
            "rounds": rounds,
            "percentiles": list(percentiles),
            "peak_tflops": peak_tflops,
        },
    )
    speedups: list[Speedup] = []
    with ExitStack() as stack:
        runners = [stack.enter_context(open_runners(t))[0] for t in targets]
        for case in cases:
            measured = time_interleaved(runners, case.shape, timing, rounds=rounds)
            for target, runner, raw in zip(targets, runners, measured.raws, strict=True):
                report.results.append(
                    summarize_target(target, runner, raw, case, percentiles=percentiles, peak_tflops=peak_tflops)
                )
            for j in range(1, len(targets)):
                ratios = measured.ratios(0, j)
                speedups.append(
                    Speedup(runners[0].name, runners[j].name, targets[j].variant, case,
                            statistics.median(ratios), min(ratios), max(ratios), rounds)
                )
    return report, speedups
