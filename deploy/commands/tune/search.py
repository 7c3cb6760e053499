"""The search: gate first, then successive halving with every timing interleaved against the current best.

1. **Gate first.** Before a candidate is timed, its (file, backend, precision) is run once on the
   reference cases (the user's held-out photos, or the synthetic grid with ``--gate grid``) and held to
   that precision's gate (``deploy.compare.tolerance_for``; ``--min-top1-agreement`` replaces the
   top-1 agreement). A key that fails drops every candidate that shares it (all thread and stream
   counts) untimed.
2. **Interleaved against the best.** Each candidate is timed against the incumbent (the best so far) in
   ``ROUNDS`` alternating rounds (A B, B A, ...), each slice one pass over the workload's sizes that
   starts with one untimed query (as ``bench.interleave`` does; here each runner keeps its own batch).
   A round's latency score is its ``size_p50`` (each size's p50, averaged over the sizes), not the p50 of
   its queries, which lands on whichever size the middle query falls on.
   The challenger takes the incumbent's place only when the median of its per-round speed ratios is at
   least ``1 + MARGIN`` *and* it won at least ``WIN_ROUNDS`` of the rounds, so a noisy round cannot crown
   it. A candidate over ``--max-p99-ms`` is never crowned; a feasible one always beats an infeasible
   incumbent.
3. **Successive halving.** Rung 0 times every candidate that passed its gate with 1 query per size per
   round; the better half (by its own median score; ``ETA`` = 2) goes on to the next rung with twice the
   queries, until one is left. The incumbent is never pruned.
4. **Budget.** Before each gate or comparison the search estimates its cost from what the last ones cost;
   if it would end past ``--budget-s`` it stops with the best found so far, and the result says how many
   candidates it decided (dropped at the gate, pruned, finalist) out of the space.
5. **The best timed alone.** Room is kept within the budget for the best's own figures, the ones
   ``deploy.json`` records: ``ROUNDS`` rounds of whole passes over the workload, each round at least
   ``ROUND_MIN_S`` long. ``tune`` times it in fresh processes, one after the other, and keeps the median
   process's figures (``AloneTiming``; ``remeasure.in_fresh_processes``), the way ``benchmark --config``
   times it again: a runner opened after a dozen others in one long process was measured up to 1.45x slower
   there, and on a shared VM one fresh process lands up to 15% from the next.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ...compare import Tolerance, ValidationReport, tolerance_for
from ...errors import DeployError, OptionError, one_line
from ...loader import ModelPlan, ModelSource, open_runner, plan_model, reference_model
from ...precision import run_precision
from ...reference import ReferenceCase, compare_runner
from ...runners.base import Runner
from ..bench.stats import percentile
from ..bench.timing import RawTimings, TimingConfig, make_inputs, time_case
from .figures import OBJECTIVE_FIGURE, Figures, median_process, size_p50
from .space import Candidate, Space
from .workload import Workload

__all__ = ["ROUNDS", "ETA", "MARGIN", "WIN_ROUNDS", "ROUND_MIN_S", "AloneTiming", "Gate", "SideTimings", "Trial",
           "SearchResult", "Search", "open_group", "open_timed", "time_slice"]

ROUNDS = 6
ETA = 2
MARGIN = 0.02
WIN_ROUNDS = 0.75
#: seconds each round of the best's own timing lasts at least (whole passes over the workload), in each process
ROUND_MIN_S = 0.5


@dataclass
class Gate:
    """One (file, backend, precision) held to its gate on the reference cases."""

    computes: str
    tolerance: Tolerance
    report: ValidationReport | None
    error: str | None = None
    seconds: float = 0.0
    per_image_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and self.report is not None and self.report.passed

    def metric(self, name: str) -> float | None:
        if self.report is None:
            return None
        values = [getattr(o, name) for c in self.report.cases for o in c.outputs if getattr(o, name) is not None]
        if not values:
            return None
        return max(values) if name == "rel_l2" else min(values)

    def to_dict(self) -> dict[str, Any]:
        return {"computes": self.computes, "passed": self.passed, "gate": self.tolerance.describe(),
                "rel_l2": self.metric("rel_l2"), "cosine": self.metric("cosine_min"),
                "top1_agreement": self.report.top1_agreement if self.report else None,
                "failures": ([self.error] if self.error else []) + (self.report.failures if self.report else [])}


@dataclass
class SideTimings:
    """One runner group's timings in a comparison: merged, and per round."""

    raw: RawTimings = field(default_factory=RawTimings)
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # the shape of each of ``raw.latency_ms``
    images: int = 0
    mpx: float = 0.0
    round_scores: list[float] = field(default_factory=list)

    def slice(self, group: Sequence[Runner], batch: int, workload: Workload, passes: int,
              inputs: dict) -> tuple[float, int, float]:
        """Time one slice (``passes`` passes over ``workload`` at ``batch``, ``time_slice``) and add it;
        (its ``size_p50`` in ms, its queries, its wall s)."""
        sizes = [(batch, 3, h, w) for _ in range(passes) for h, w in workload.sizes]
        lat, shapes, wall = time_slice(group, sizes, inputs)
        self.raw.latency_ms.extend(lat)
        self.shapes.extend(shapes)
        self.raw.queries += len(lat)
        self.raw.wall_s += wall
        self.images += len(lat) * batch  # one latency per query, each of batch images
        self.mpx += sum(b * h * w for b, _, h, w in sizes) / 1e6
        return size_p50(lat, shapes), len(lat), wall

    def figures(self) -> Figures:
        lat = self.raw.latency_ms
        wall = max(self.raw.wall_s, 1e-12)
        return Figures(p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), images_per_s=self.images / wall,
                       ms_per_mpx=wall * 1e3 / max(self.mpx, 1e-12), queries=self.raw.queries,
                       size_p50_ms=size_p50(lat, self.shapes))


@dataclass
class Trial:
    """What happened to one candidate."""

    candidate: Candidate
    status: str = "not reached"
    gate: Gate | None = None
    rung: int = -1
    score: float | None = None  # its own median per-round score (higher is better)
    vs_best: float | None = None  # median per-round speed ratio against the incumbent it was timed with
    won_rounds: float | None = None
    figures: Figures | None = None
    passes: int = 1  # passes over the workload per round in the timing ``figures`` come from
    alone: bool = False  # ``figures`` were timed alone (the best, after the search), not in a comparison
    timed_in: str = ""  # where they were timed alone ("3 fresh processes", "the tune process")
    processes: list[Figures] = field(default_factory=list)  # each process's figures, ``figures`` the median's

    @property
    def timed(self) -> bool:
        return self.figures is not None

    def row(self) -> dict[str, Any]:
        c, g, f = self.candidate, self.gate, self.figures
        return {
            **c.to_dict(), "computes": g.computes if g else c.computes, "status": self.status, "rung": self.rung,
            "gate": None if g is None else g.passed, "rel_l2": g.metric("rel_l2") if g else None,
            "cosine": g.metric("cosine_min") if g else None,
            "top1_agreement": g.report.top1_agreement if g and g.report else None,
            "p50_ms": f.p50_ms if f else None, "size_p50_ms": f.size_p50_ms if f else None,
            "p99_ms": f.p99_ms if f else None,
            "images_per_s": f.images_per_s if f else None, "ms_per_mpx": f.ms_per_mpx if f else None,
            "vs_best": self.vs_best,
        }


@dataclass
class SearchResult:
    trials: list[Trial]
    best: Trial | None
    stopped: str  # "done", "budget", "interrupted"
    elapsed_s: float
    rungs: int

    @property
    def decided(self) -> int:
        """Candidates the search reached a verdict on: dropped at the gate, pruned, finalist or best."""
        return sum(t.status not in ("not reached", "gated") for t in self.trials)

    def coverage(self) -> dict[str, Any]:
        n = len(self.trials)
        counts = Counter(t.status.split(" at ")[0] for t in self.trials)
        return {"candidates": n, "decided": self.decided, "fraction": self.decided / n if n else 0.0,
                "by_status": dict(counts), "stopped": self.stopped, "rungs": self.rungs,
                "elapsed_s": round(self.elapsed_s, 2)}

    def coverage_line(self) -> str:
        c = self.coverage()
        parts = ", ".join(f"{v} {k}" for k, v in c["by_status"].items())
        why = {"done": "search complete", "budget": "stopped at the budget",
               "interrupted": "interrupted"}[self.stopped]
        return (f"covered {c['decided']} of {c['candidates']} candidates ({c['fraction']:.0%}; {parts}); "
                f"{c['rungs']} halving rung(s); {why} after {c['elapsed_s']:.0f} s")


def time_slice(group: Sequence[Runner], shapes: Sequence[tuple[int, ...]],
               inputs: dict) -> tuple[list[float], list[tuple[int, ...]], float]:
    """Send ``shapes`` in order to ``group`` (one runner, or one per stream in flight), the first query
    untimed (the last runtime's threads and caches must not land in it); (latencies in ms, the shape of
    each, wall s).

    One runner: every query timed on the host clock, in stream order, so a size seen for the first time
    costs what it costs. Several: ``bench.timing.time_case`` per size (one query per runner at a time)."""
    def batch(shape: tuple[int, ...], n: int) -> Any:  # two buffers per size, in turn: no warm-cache timing
        if shape not in inputs:
            inputs[shape] = make_inputs(shape, 2, seed=len(inputs))
        return inputs[shape][n % 2]

    if len(group) > 1:
        lat: list[float] = []
        of: list[tuple[int, ...]] = []
        wall = 0.0
        for shape, count in Counter(shapes).items():
            raw = time_case(list(group), shape, TimingConfig(warmup_s=0.0, iterations=count, buffers=2))
            lat.extend(raw.latency_ms)
            of.extend([tuple(shape)] * len(raw.latency_ms))
            wall += raw.wall_s
        return lat, of, wall
    runner = group[0]
    runner.infer(batch(shapes[0], 1))
    lat = []
    start = time.perf_counter()
    for n, shape in enumerate(shapes):
        x = batch(shape, n)
        t0 = time.perf_counter()
        runner.run(runner.load_input(x))
        runner.synchronize()
        runner.fetch()
        lat.append((time.perf_counter() - t0) * 1e3)
    return lat, [tuple(s) for s in shapes], time.perf_counter() - start


@contextmanager
def open_timed(candidate: Candidate, *, exact: bool = False) -> Iterator[list[Runner]]:
    """Active runner(s) of ``candidate``: one taking ``streams`` queries at once where the runner is
    concurrent (OpenVINO), else ``streams`` runners."""
    path = candidate.model.path
    if path is None:
        source = ModelSource(variant=candidate.model.facts.variant or "s", weights=candidate.model.weights)
        model: Any = reference_model(source.variant, source.weights)  # type: ignore[arg-type]
    else:
        source, model = ModelSource.of(path), None
    with open_group(plan_model(source, candidate.backend, candidate.options(exact=exact)), candidate.streams,
                    model) as group:
        yield group


@contextmanager
def open_group(plan: ModelPlan, streams: int, model: Any = None) -> Iterator[list[Runner]]:
    """``streams`` queries in flight on ``plan``: one runner ``streams`` times where it is concurrent
    (OpenVINO), else ``streams`` runners."""
    with ExitStack() as stack:
        first = stack.enter_context(open_runner(plan, model))
        if first.concurrent or streams == 1:
            yield [first] * streams
            return
        yield [first] + [stack.enter_context(open_runner(plan, model)) for _ in range(streams - 1)]


@dataclass(frozen=True)
class AloneTiming:
    """How the best is timed alone after the search: ``time(trial, passes)`` gives the figures of each of
    ``processes`` timings (``ROUNDS`` rounds of ``passes`` passes each); ``overhead_s`` is what each costs
    beyond its queries and its runners' opening (a process's start), kept within the budget; ``where`` says
    where they ran."""

    time: Callable[[Trial, int], list[Figures]]
    overhead_s: float
    where: str
    processes: int = 1


class Search:
    """One run of the search over ``space`` (module docstring)."""

    def __init__(
        self,
        space: Space,
        cases: Sequence[ReferenceCase],
        workload: Workload,
        *,
        objective: str,
        budget_s: float,
        max_p99_ms: float | None = None,
        min_top1_agreement: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_progress: Callable[[Search], None] | None = None,
        model_label: str = "",
        weights_label: str = "",
        alone: AloneTiming | None = None,
    ) -> None:
        self.space, self.cases, self.workload = space, list(cases), workload
        self.objective, self.budget_s = objective, budget_s
        self.max_p99_ms, self.min_top1 = max_p99_ms, min_top1_agreement
        self.clock, self.on_progress = clock, on_progress
        self.model_label, self.weights_label = model_label, weights_label
        self.alone = alone or AloneTiming(lambda t, p: [self._solo(t, p)], 0.0, "the tune process")
        self.trials = [Trial(c) for c in space.candidates]
        self.gates: dict[Any, Gate] = {}
        self.best: Trial | None = None
        self.phase = "gating"
        self.rungs = 0
        self._start = 0.0
        self._gate_cost: float | None = None
        self._cost_per_query: float | None = None  # seconds per (query x Mpx x batch), from comparisons
        self._open_cost = 1.0

    # -- budget -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self._start

    def _fits(self, estimate: float) -> bool:
        """Whether ``estimate`` more seconds still leave room, within the budget, for the best's own timing."""
        return self.elapsed() + estimate + self._final_estimate() <= self.budget_s

    def _final_estimate(self) -> float:
        best = self.best
        if best is None:
            return 0.0
        passes = self._final_passes(best)
        rounds = self._compare_estimate(best.candidate, best.candidate, passes) / 2 - self._open_cost
        if best.figures is not None:
            rounds = ROUNDS * (passes + 1 / len(self.workload.sizes)) * self._pass_s(best)  # + the untimed query
        return self.alone.processes * (self.alone.overhead_s + self._open_cost + rounds)

    def _pass_s(self, trial: Trial) -> float:
        """Seconds one pass over the workload took ``trial`` (from its figures)."""
        assert trial.figures is not None
        return len(self.workload.sizes) * trial.candidate.batch / max(trial.figures.images_per_s, 1e-12)

    def _final_passes(self, trial: Trial) -> int:
        """Passes per round of the best's own timing: at least its last comparison's, and ``ROUND_MIN_S``."""
        if trial.figures is None:
            return trial.passes
        return max(trial.passes, math.ceil(ROUND_MIN_S / max(self._pass_s(trial), 1e-9)))

    def _gate_estimate(self, trial: Trial) -> float:
        if trial.candidate.gate_key in self.gates:  # held once per key: nothing more to run
            return 0.0
        return self._gate_cost if self._gate_cost is not None else self._open_cost

    def _slice_queries(self, per_size: int) -> int:
        """Queries one side sends in a comparison: ``ROUNDS`` slices of ``per_size`` passes over the sizes,
        each after one untimed query."""
        return ROUNDS * (len(self.workload.sizes) * per_size + 1)

    def _compare_estimate(self, a: Candidate, b: Candidate, per_size: int) -> float:
        queries = self._slice_queries(per_size)
        mpx = self.workload.megapixels()
        rate = self._cost_per_query
        if rate is None:
            per_image = min((g.per_image_s for g in self.gates.values() if g.per_image_s), default=0.05)
            photo_mpx = self.cases[0].shape[2] * self.cases[0].shape[3] / 1e6 if self.cases else 0.05
            rate = per_image / max(photo_mpx, 1e-6)
        return 2 * self._open_cost + sum(queries * c.batch * c.streams * mpx * rate for c in (a, b))

    # -- gate ---------------------------------------------------------------------------
    def _gate(self, trial: Trial) -> Gate:
        key = trial.candidate.gate_key
        if key in self.gates:
            return self.gates[key]
        c = trial.candidate
        t0 = self.clock()
        tol = tolerance_for(c.computes)
        try:
            with open_timed(replace(c, threads=None, streams=1), exact=True) as runners:
                runner = runners[0]
                used = getattr(runner, "precision_used", None)
                computes = (run_precision(c.model.facts.precision, used) if c.model.facts.format != "pytorch"
                            else c.computes) or c.computes
                tol = tolerance_for(c.model.facts.precision if c.model.facts.format != "pytorch" else c.computes,
                                    used)
                if self.min_top1 is not None:
                    tol = replace(tol, min_top1_agreement=self.min_top1)
                g0 = time.perf_counter()
                report = compare_runner(runner, self.cases, tolerance=tol, model_label=self.model_label,
                                        weights=self.weights_label)
                images = sum(case.shape[0] for case in self.cases)
                gate = Gate(computes, tol, report, per_image_s=(time.perf_counter() - g0) / max(images, 1))
        except (OptionError, DeployError) as exc:
            gate = Gate(c.computes, tol, None, error=one_line(exc))
        gate.seconds = self.clock() - t0
        self._gate_cost = max(self._gate_cost or 0.0, gate.seconds)
        self.gates[key] = gate
        return gate

    # -- timing ---------------------------------------------------------------------------
    def _score(self, latency_ms: float, images: int, wall: float) -> float:
        if self.objective == "throughput":
            return images / max(wall, 1e-12)
        return 1.0 / max(latency_ms, 1e-12)

    def _slice(self, side: SideTimings, group: list[Runner], c: Candidate, per_size: int, inputs: dict) -> float:
        """One slice of ``c``: ``per_size`` passes over the workload in stream order; its score (latency: by
        the slice's ``size_p50``)."""
        latency_ms, queries, wall = side.slice(group, c.batch, self.workload, per_size, inputs)
        return self._score(latency_ms, queries * c.batch, wall)

    def _compare(self, inc: Trial, cand: Trial, per_size: int) -> tuple[SideTimings, SideTimings]:
        """Time ``inc`` and ``cand`` in alternating rounds (A B, B A, ...)."""
        t0 = self.clock()
        sides = [SideTimings(), SideTimings()]
        inputs: dict[tuple[int, ...], Any] = {}
        with ExitStack() as stack:
            groups = [stack.enter_context(open_timed(t.candidate)) for t in (inc, cand)]
            for k in range(ROUNDS):
                for i in ((0, 1) if k % 2 == 0 else (1, 0)):
                    c = (inc, cand)[i].candidate
                    sides[i].round_scores.append(self._slice(sides[i], groups[i], c, per_size, inputs))
        spent = self.clock() - t0
        work = sum(self._slice_queries(per_size) * t.candidate.batch * t.candidate.streams
                   * self.workload.megapixels() for t in (inc, cand))
        if work > 0:
            self._cost_per_query = max(spent - 2 * self._open_cost, spent / 2) / work
        return sides[0], sides[1]

    def _feasible(self, f: Figures | None) -> bool:
        return self.max_p99_ms is None or (f is not None and f.p99_ms <= self.max_p99_ms)

    def _challenge(self, cand: Trial, rung: int, per_size: int) -> None:
        inc = self.best
        assert inc is not None
        a, b = self._compare(inc, cand, per_size)
        ratios = [cb / ca for ca, cb in zip(a.round_scores, b.round_scores, strict=True)]
        inc.figures, cand.figures = a.figures(), b.figures()
        inc.passes = cand.passes = per_size
        inc.score = statistics.median(a.round_scores)
        cand.score = statistics.median(b.round_scores)
        cand.vs_best = statistics.median(ratios)
        cand.won_rounds = sum(r > 1.0 for r in ratios) / len(ratios)
        cand.rung = rung
        if not self._feasible(cand.figures):
            return
        wins = cand.vs_best >= 1.0 + MARGIN and cand.won_rounds >= WIN_ROUNDS
        if wins or not self._feasible(inc.figures):
            inc.vs_best = 1.0 / cand.vs_best if cand.vs_best else None
            self.best = cand

    def _solo(self, trial: Trial, passes: int = 1) -> Figures:
        """``trial`` timed alone here: runners opened fresh, ``ROUNDS`` slices of ``passes`` passes over the
        workload (what ``benchmark --config`` does again in a process of its own)."""
        side = SideTimings()
        with open_timed(trial.candidate) as group:
            for _ in range(ROUNDS):
                self._slice(side, group, trial.candidate, passes, {})
        return side.figures()

    def _final(self) -> None:
        """The best's figures timed alone (``self.alone``), so that ``deploy.json`` records what the deployment
        does by itself, not beside a rival runtime's threads and caches (skipped if the budget has no room
        left). Where that fails (a fresh process that cannot start), it is timed here instead, and says so."""
        best = self.best
        if best is None or best.alone:
            return
        if self.elapsed() + self._final_estimate() > self.budget_s * 1.05:
            return
        passes = self._final_passes(best)
        self.phase = f"timing the best alone ({self.alone.where})"
        self._tick()
        try:
            best.processes, best.timed_in = self.alone.time(best, passes), self.alone.where
        except DeployError as exc:
            best.processes = [self._solo(best, passes)]
            best.timed_in = f"the tune process ({self.alone.where} failed: {one_line(exc)})"
        best.figures = median_process(best.processes, OBJECTIVE_FIGURE.get(self.objective, "size_p50_ms"))
        best.passes, best.alone = passes, True

    def _tick(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> SearchResult:
        self._start = self.clock()
        stopped = "done"
        try:
            stopped = self._run()
            self._final()
        except KeyboardInterrupt:
            stopped = "interrupted"
        for t in self.trials:
            if t is self.best:
                t.status, t.vs_best = "best", 1.0
        return SearchResult(self.trials, self.best, stopped, self.elapsed(), self.rungs)

    def _run(self) -> str:
        pool: list[Trial] = []
        self.phase = "rung 0"
        for trial in self.trials:
            if not self._fits(self._gate_estimate(trial)):
                return "budget"
            trial.gate = self._gate(trial)
            if not trial.gate.passed:
                trial.status = "dropped at gate"
                self._tick()
                continue
            trial.status = "gated"
            if self.best is None:
                self.best = trial
            else:
                if not self._fits(self._compare_estimate(self.best.candidate, trial.candidate, 1)):
                    return "budget"
                self._challenge(trial, 0, 1)
                self.rungs = 1
            trial.status = "timed at rung 0"
            pool.append(trial)
            self._tick()
        if self.best is None:
            return "done"
        if len(pool) == 1:  # nothing to compare it with: its figures are its own timing (``_final``)
            if not self._fits(0.0):
                return "budget"
            self.best.rung = 0
            self.rungs = 1
            return "done"
        rung, per_size = 0, 1
        while True:
            contenders = [t for t in pool if t is not self.best]
            keep = math.ceil(len(contenders) / ETA) if len(contenders) > 1 else 0
            ranked = sorted(contenders, key=lambda t: -(t.score or 0.0) if self._feasible(t.figures) else math.inf)
            for t in ranked[keep:]:
                t.status = f"pruned at rung {rung}"
            pool = [self.best, *ranked[:keep]]
            self._tick()
            if keep == 0:
                return "done"
            rung += 1
            per_size *= 2
            self.phase = f"rung {rung}"
            for n, trial in enumerate(ranked[:keep]):
                if trial is self.best:
                    continue
                if not self._fits(self._compare_estimate(self.best.candidate, trial.candidate, per_size)):
                    for t in ranked[n:keep]:
                        if t is not self.best:
                            t.status = f"finalist at rung {rung - 1}"
                    return "budget"
                self._challenge(trial, rung, per_size)
                self.rungs = rung + 1
                trial.status = f"timed at rung {rung}"
                self._tick()
