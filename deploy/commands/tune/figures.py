"""The figures a timing yields, and how several processes' figures are read: ``Figures`` (p50/p99, the
per-size p50, images/s, ms per megapixel), the figure each objective is judged by, the median process, and
the spread that says a machine's speed moved while it was timed. ``search`` and ``remeasure`` both use them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..bench.stats import percentile

__all__ = ["Figures", "OBJECTIVE_FIGURE", "size_p50", "UNSTEADY_SPREAD", "process_spread", "unsteady_note",
           "median_process"]


@dataclass
class Figures:
    """Measured on the workload: per-query latency percentiles, the per-size p50 (``size_p50``), images/s
    and wall ms per megapixel."""

    p50_ms: float
    p99_ms: float
    images_per_s: float
    ms_per_mpx: float
    queries: int
    size_p50_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.p50_ms, "size_p50_ms": self.size_p50_ms, "p99_ms": self.p99_ms,
                "images_per_s": self.images_per_s, "ms_per_mpx": self.ms_per_mpx, "queries": self.queries}


#: the figure each objective is judged by (lower is better for a figure in ms)
OBJECTIVE_FIGURE = {"latency": "size_p50_ms", "throughput": "images_per_s"}


def size_p50(latency_ms: Sequence[float], shapes: Sequence[tuple[int, ...]]) -> float:
    """The mean over the distinct sizes of each one's p50 latency (``shapes[i]`` is ``latency_ms[i]``'s): the
    latency a multi-size workload is judged by, and for one size its p50.

    The p50 of all queries of a stream of sizes is the latency of whichever size the middle query falls on:
    16 sizes x 12 queries put it between the 8th and 9th smallest, and two processes' p50 differed by 14%
    where this figure differed by 0.7% (``benchmarks/RESULTS.md``)."""
    by_size: dict[tuple[int, ...], list[float]] = {}
    for ms, shape in zip(latency_ms, shapes, strict=True):
        by_size.setdefault(shape, []).append(ms)
    return statistics.fmean(percentile(v, 50) for v in by_size.values())


#: the spread between processes (slowest over fastest, on the objective's figure) beyond which the machine's
#: timing is called unsteady: ``tune`` notes it and ``benchmark --config`` warns that its ratio cannot be read
#: to within 10%
UNSTEADY_SPREAD = 1.10


def process_spread(figures: Sequence[Figures], figure: str) -> float:
    """The slowest process over the fastest on ``figure`` (1.0 for one process)."""
    values = [float(getattr(f, figure)) for f in figures]
    return max(values) / max(min(values), 1e-12) if values else 1.0


def unsteady_note(figures: Sequence[Figures], figure: str, what: str) -> str | None:
    """One line when ``figures`` (each process's) spread beyond ``UNSTEADY_SPREAD``, else None."""
    spread = process_spread(figures, figure)
    if spread <= UNSTEADY_SPREAD:
        return None
    values = sorted(float(getattr(f, figure)) for f in figures)
    return (f"{what}: the {len(values)} fresh processes spread {spread:.2f}x on {figure} ({values[0]:.4g} to "
            f"{values[-1]:.4g}): this machine's speed moved while they ran, so no single figure holds to 10% here; "
            "re-measure with 'benchmark --config' on a quiet machine before relying on it")


def median_process(figures: Sequence[Figures], figure: str) -> Figures:
    """The median of several processes' figures on ``figure`` (a ``Figures`` field; the lower middle of an
    even count)."""
    ranked = sorted(figures, key=lambda f: getattr(f, figure), reverse=not figure.endswith("_ms"))  # best first
    return ranked[(len(ranked) - 1) // 2]
