"""Pure statistics of a benchmark: percentiles, coefficient of variation,
throughput, achieved TFLOP/s and trtexec-style warnings.

Nothing here times or runs anything, so every number can be checked with
synthetic timings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_PERCENTILES",
    "UNSTABLE_CV",
    "ENQUEUE_BOUND_RATIO",
    "TimeStats",
    "PerfWarning",
    "percentile",
    "coefficient_of_variation",
    "summarize",
    "parse_percentiles",
    "throughput",
    "achieved_tflops",
    "peak_fraction",
    "diagnose",
]

DEFAULT_PERCENTILES: tuple[float, ...] = (90.0, 95.0, 99.0)
#: Coefficient of variation above which a measurement is called unstable (trtexec uses 1% on a
#: locked-clock GPU; 5% suits shared CPUs and unlocked clocks).
UNSTABLE_CV = 0.05
#: Enqueue time above this fraction of compute time means the host cannot launch fast enough (trtexec's 0.8).
ENQUEUE_BOUND_RATIO = 0.8


def _check(values: Sequence[float]) -> list[float]:
    data = [float(v) for v in values]
    if not data:
        raise ValueError("no timings to summarise")
    if any(math.isnan(v) for v in data):
        raise ValueError("timings contain NaN")
    return data


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks (numpy's default method)."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = sorted(_check(values))
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Population standard deviation over mean (0 for a single value or a zero mean)."""
    data = _check(values)
    mean = sum(data) / len(data)
    if len(data) < 2 or mean == 0:
        return 0.0
    var = sum((v - mean) ** 2 for v in data) / len(data)
    return math.sqrt(var) / abs(mean)


def _pkey(q: float) -> str:
    return f"p{q:g}"


@dataclass(frozen=True)
class TimeStats:
    """Summary of one series of times in milliseconds."""

    count: int
    min: float
    max: float
    mean: float
    median: float
    std: float
    cv: float
    percentiles: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "median": self.median,
            "std": self.std,
            "cv": self.cv,
            "percentiles": dict(self.percentiles),
        }


def summarize(values_ms: Sequence[float], percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> TimeStats:
    """min/max/mean/median/std/CV and the requested percentiles (keys ``p90``, ``p99.9``...)."""
    data = _check(values_ms)
    mean = sum(data) / len(data)
    std = math.sqrt(sum((v - mean) ** 2 for v in data) / len(data))
    return TimeStats(
        count=len(data),
        min=min(data),
        max=max(data),
        mean=mean,
        median=percentile(data, 50.0),
        std=std,
        cv=coefficient_of_variation(data),
        percentiles={_pkey(q): percentile(data, q) for q in percentiles},
    )


def parse_percentiles(text: str) -> tuple[float, ...]:
    """``"90,95,99"`` -> ``(90.0, 95.0, 99.0)``; each within (0, 100], duplicates dropped."""
    out: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            q = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number (use a list like 90,95,99)") from None
        if not 0.0 < q <= 100.0 or math.isnan(q):
            raise ValueError(f"percentile {part} is outside (0, 100]")
        if q not in out:
            out.append(q)
    if not out:
        raise ValueError("no percentiles given (use a list like 90,95,99)")
    return tuple(out)


def throughput(count: int, seconds: float) -> float:
    """Items per second."""
    if seconds <= 0:
        raise ValueError(f"elapsed time must be positive, got {seconds}")
    return count / seconds


def achieved_tflops(macs_per_image: float, images_per_s: float) -> float:
    """Useful TFLOP/s: 2 FLOPs per multiply-accumulate."""
    return 2.0 * macs_per_image * images_per_s / 1e12


def peak_fraction(tflops: float | None, peak_tflops: float | None) -> float | None:
    """Achieved over peak TFLOP/s, or None when either is unknown."""
    if tflops is None or not peak_tflops:
        return None
    return tflops / peak_tflops


@dataclass(frozen=True)
class PerfWarning:
    """A trtexec-style remark on a measurement: ``code`` for machines, ``message`` for people."""

    code: str  # "unstable", "enqueue-bound" or "transfer-bound"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def diagnose(
    latency: TimeStats,
    *,
    compute: TimeStats | None = None,
    enqueue: TimeStats | None = None,
    h2d: TimeStats | None = None,
    d2h: TimeStats | None = None,
    unstable_cv: float = UNSTABLE_CV,
    enqueue_hint: str = "try --cuda-graph",
) -> list[PerfWarning]:
    """trtexec's three warnings, decided on medians and the CV of compute time (else latency)."""
    warnings: list[PerfWarning] = []
    basis = compute if compute is not None else latency
    if basis.cv > unstable_cv:
        what = "compute time" if compute is not None else "latency"
        warnings.append(
            PerfWarning(
                "unstable",
                f"{what} is unstable: coefficient of variation {basis.cv:.1%} > {unstable_cv:.0%} "
                "(a busy machine, clock changes or too few iterations; try a longer --duration-s)",
            )
        )
    if compute is not None and enqueue is not None and enqueue.median > ENQUEUE_BOUND_RATIO * compute.median:
        warnings.append(
            PerfWarning(
                "enqueue-bound",
                f"enqueue-bound: launching takes {enqueue.median:.3g} ms against {compute.median:.3g} ms "
                f"of compute, so the GPU waits for the host; {enqueue_hint}",
            )
        )
    if compute is not None and h2d is not None and d2h is not None:
        transfer = h2d.median + d2h.median
        if transfer > compute.median:
            warnings.append(
                PerfWarning(
                    "transfer-bound",
                    f"transfer-bound: host<->device copies take {transfer:.3g} ms against "
                    f"{compute.median:.3g} ms of compute; a larger batch or keeping inputs on the GPU helps",
                )
            )
    return warnings
