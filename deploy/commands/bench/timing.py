"""The one timing loop every backend goes through (trtexec's method, Polygraphy's shape).

Warm-up by time, then a duration or a fixed number of iterations. Inputs rotate
through several host buffers so that repeated runs do not time a warm cache.
Runners with a CUDA ``stream`` are timed with CUDA events recorded on that
stream, split into host-to-device, compute and device-to-host; the host time
for ``run`` to return is the enqueue time. Host-synchronous runners are timed
with the host clock, which is correct for them because ``run`` returns when
the work is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...runners.base import MIN_SIDE, Runner

__all__ = ["Case", "expand_sweep", "TimingConfig", "RawTimings", "time_case", "make_inputs"]

Clock = Callable[[], float]


@dataclass(frozen=True, order=True)
class Case:
    """One point of a sweep: batch and input height x width."""

    batch: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if min(self.height, self.width) < MIN_SIDE:
            raise ValueError(f"resolution {self.height}x{self.width}: height and width must be >= {MIN_SIDE}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, self.height, self.width)

    @property
    def pixels(self) -> int:
        """Pixels per image."""
        return self.height * self.width

    @property
    def label(self) -> str:
        return f"b{self.batch} {self.height}x{self.width}"


def expand_sweep(batches: Sequence[int], resolutions: Sequence[tuple[int, int]]) -> list[Case]:
    """Every (resolution, batch) pair, resolution-major, in the order given, duplicates dropped."""
    if not batches or not resolutions:
        raise ValueError("a sweep needs at least one batch and one resolution")
    cases: list[Case] = []
    for h, w in resolutions:
        for b in batches:
            case = Case(int(b), int(h), int(w))
            if case not in cases:
                cases.append(case)
    return cases


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and to measure; ``iterations`` (exact count) overrides ``duration_s``.

    In duration mode the loop runs until ``duration_s`` has passed *and* at least
    ``min_iterations`` iterations were timed (trtexec's ``--duration``/``--iterations`` rule).
    Warm-up always runs at least one iteration, so a ``torch.compile`` or a lazy
    initialisation never lands in the measurement.
    """

    warmup_s: float = 0.2
    duration_s: float | None = 3.0
    iterations: int | None = None
    min_iterations: int = 10
    buffers: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup_s < 0:
            raise ValueError(f"warm-up must be >= 0 s, got {self.warmup_s}")
        if self.iterations is not None:
            if self.iterations < 1:
                raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        elif self.duration_s is None or not self.duration_s > 0:
            raise ValueError(f"duration must be > 0 s, got {self.duration_s}")
        if self.min_iterations < 1:
            raise ValueError(f"min_iterations must be >= 1, got {self.min_iterations}")
        if self.buffers < 1:
            raise ValueError(f"buffers must be >= 1, got {self.buffers}")

    @property
    def estimated_s(self) -> float | None:
        """Expected seconds per case (None in iterations mode, where it depends on the model)."""
        if self.iterations is not None:
            return None
        return self.warmup_s + float(self.duration_s or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_s": self.warmup_s,
            "duration_s": None if self.iterations is not None else self.duration_s,
            "iterations": self.iterations,
            "min_iterations": None if self.iterations is not None else self.min_iterations,
            "buffers": self.buffers,
        }


@dataclass
class RawTimings:
    """Per-query times (ms) of one case; GPU-split lists are empty for host-timed runners."""

    latency_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    h2d_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    d2h_ms: list[float] = field(default_factory=list)
    enqueue_ms: list[float] = field(default_factory=list)
    iterations: int = 0
    queries: int = 0
    wall_s: float = 0.0
    warmup_iterations: int = 0
    warmup_s: float = 0.0

    @property
    def gpu_timed(self) -> bool:
        return bool(self.compute_ms)

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.wall_s


def make_inputs(shape: Sequence[int], count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct float32 NCHW batches of normal noise."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape), dtype=np.float32) for _ in range(count)]


def _cuda_event() -> Any:
    import torch

    return torch.cuda.Event(enable_timing=True)


#: Replaced in tests by a fake event; ``record(stream)``, ``synchronize()``, ``elapsed_time(end)`` in ms.
event_factory: Callable[[], Any] = _cuda_event


class _Round:
    """One query on each runner; returns (latency, host, h2d, compute, d2h, enqueue) per query."""

    def __init__(self, runners: Sequence[Runner], clock: Clock) -> None:
        self.runners = list(runners)
        self.clock = clock
        self.evented = [r.stream is not None for r in self.runners]
        self._pool: ThreadPoolExecutor | None = None
        if len(self.runners) > 1 and not all(self.evented):
            if not all(r.concurrent for r in self.runners):
                raise ValueError(
                    "several queries at once (--streams) need CUDA-stream runners or a runner that "
                    "takes concurrent queries (OpenVINO)"
                )
            self._pool = ThreadPoolExecutor(len(self.runners), thread_name_prefix="bench-stream")

    def __call__(self, x: np.ndarray) -> list[tuple[float, ...]]:
        if self._pool is not None:
            futures = [self._pool.submit(self._host_timed, r, x) for r in self.runners]
            return [f.result() for f in futures]
        if not self.evented[0]:
            return [self._host_timed(self.runners[0], x)]
        return self._event_timed(x)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _host_timed(self, r: Runner, x: np.ndarray) -> tuple[float, ...]:
        t0 = self.clock()
        r.run(r.load_input(x))
        r.synchronize()
        r.fetch()
        ms = (self.clock() - t0) * 1e3
        return (ms, ms)

    def _event_timed(self, x: np.ndarray) -> list[tuple[float, ...]]:
        t0 = self.clock()
        pending = []
        for r in self.runners:
            ev = [event_factory() for _ in range(5)]
            ev[0].record(r.stream)
            handle = r.load_input(x)
            ev[1].record(r.stream)
            t_enq = self.clock()
            r.run(handle)
            enqueue = (self.clock() - t_enq) * 1e3
            ev[2].record(r.stream)
            pending.append((r, ev, enqueue))
        out = []
        for r, ev, enqueue in pending:
            r.synchronize()
            ev[3].record(r.stream)
            r.fetch()
            ev[4].record(r.stream)
            ev[4].synchronize()
            out.append((r, ev, enqueue))
        host = (self.clock() - t0) * 1e3
        rows: list[tuple[float, ...]] = []
        for _, ev, enqueue in out:
            h2d = ev[0].elapsed_time(ev[1])
            compute = ev[1].elapsed_time(ev[2])
            d2h = ev[3].elapsed_time(ev[4])
            rows.append((h2d + compute + d2h, host, h2d, compute, d2h, enqueue))
        return rows


def time_case(
    runners: Runner | Sequence[Runner],
    shape: Sequence[int],
    config: TimingConfig,
    *,
    clock: Clock = time.perf_counter,
    progress: Callable[[float], None] | None = None,
) -> RawTimings:
    """Warm up, then time ``shape`` on active ``runners`` (several = one query per runner per iteration).

    ``progress`` receives the fraction of this case done, after every iteration.
    """
    runners = [runners] if isinstance(runners, Runner) else list(runners)
    if not runners:
        raise ValueError("no runner to time")
    inputs = make_inputs(shape, config.buffers, config.seed)
    one_round = _Round(runners, clock)
    try:
        return _time_rounds(one_round, inputs, config, clock, progress)
    finally:
        one_round.close()


def _time_rounds(
    one_round: _Round,
    inputs: list[np.ndarray],
    config: TimingConfig,
    clock: Clock,
    progress: Callable[[float], None] | None,
) -> RawTimings:
    estimate = config.estimated_s
    raw = RawTimings()

    start = clock()
    n = 0
    while True:
        one_round(inputs[n % len(inputs)])
        n += 1
        elapsed = clock() - start
        if progress is not None and estimate:
            progress(min(1.0, elapsed / estimate))
        if elapsed >= config.warmup_s:
            break
    raw.warmup_iterations = n
    raw.warmup_s = clock() - start

    start = clock()
    i = 0
    while True:
        for row in one_round(inputs[(n + i) % len(inputs)]):
            raw.latency_ms.append(row[0])
            raw.host_ms.append(row[1])
            if len(row) > 2:
                raw.h2d_ms.append(row[2])
                raw.compute_ms.append(row[3])
                raw.d2h_ms.append(row[4])
                raw.enqueue_ms.append(row[5])
        i += 1
        elapsed = clock() - start
        if config.iterations is not None:
            if progress is not None:
                progress(i / config.iterations)
            if i >= config.iterations:
                break
        else:
            if progress is not None and estimate:
                progress(min(1.0, (raw.warmup_s + elapsed) / estimate))
            if elapsed >= float(config.duration_s or 0.0) and i >= config.min_iterations:
                break
    raw.wall_s = clock() - start
    raw.iterations = i
    raw.queries = len(raw.latency_ms)
    return raw
