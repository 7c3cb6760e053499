"""Benchmark any runner the way trtexec does: one loop over PyTorch, onnxruntime, OpenVINO and TensorRT.

    >>> from deploy.commands.bench import TimingConfig, expand_sweep, resolve_target, run_benchmark
    >>> target = resolve_target(variant="s", backend="torch", threads=2)
    >>> report = run_benchmark(target, expand_sweep([1, 8], [(224, 224)]), TimingConfig(duration_s=1))
    >>> print(report.to_markdown())

Library layout: ``stats`` (pure numbers), ``timing`` (the loop), ``targets``
(what to run and the checks before running it), ``report`` (results and files),
``layer_times`` (per-layer time: onnxruntime's profiler, TensorRT's IProfiler). The
``benchmark`` command's one call is ``plan_benchmark`` (every check) then ``run_plan``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...backends import RunnerOptions, takers
from ...backends import backend as backend_row
from ...errors import BackendUnavailable, words
from ...loader import ModelSource
from ...machine import machine_info, versions
from .layer_times import LayerProfile, profile_onnxruntime, profile_openvino, profile_tensorrt
from .report import BenchReport, CaseResult, plot_report, summarize_case, summarize_target, write_text
from .stats import DEFAULT_PERCENTILES, PerfWarning, TimeStats, parse_percentiles
from .targets import (
    BACKENDS,
    BenchTarget,
    BenchUsageError,
    check_cases,
    check_environment,
    macs_per_image,
    open_runners,
    plot_available,
    resolve_target,
    target_for,
)
from .timing import Case, RawTimings, TimingConfig, expand_sweep, time_case

__all__ = [
    "BACKENDS",
    "DEFAULT_PERCENTILES",
    "BenchReport",
    "BenchTarget",
    "BenchUsageError",
    "BenchPlan",
    "BenchRun",
    "plan_benchmark",
    "run_plan",
    "Case",
    "CaseResult",
    "PerfWarning",
    "RawTimings",
    "TimeStats",
    "TimingConfig",
    "check_cases",
    "check_environment",
    "expand_sweep",
    "machine_info",
    "macs_per_image",
    "open_runners",
    "parse_percentiles",
    "plot_available",
    "plot_report",
    "prepare",
    "profile_layers",
    "LayerProfile",
    "resolve_target",
    "target_for",
    "run_benchmark",
    "summarize_case",
    "summarize_target",
    "time_case",
    "versions",
    "write_text",
]

#: progress(case_index, case, fraction_of_that_case_done)
Progress = Callable[[int, Case, float], None]

def prepare(target: BenchTarget, cases: Sequence[Case]) -> BenchTarget:
    """All checks that come before any work: shapes against the model file (``BenchUsageError``; for an
    engine, what the machine lacks is said before its sidecar is read), then this machine's runtimes
    (``BackendUnavailable``). Returns the completed target."""
    from ...resources import TooLarge, check_fits

    if target.engine is not None:  # what the machine lacks comes before what the sidecar says
        check_environment(target)
    target = check_cases(target, cases)
    try:
        check_fits(target.variant, [(c.batch, c.height, c.width) for c in cases], device=target.device)
    except TooLarge as exc:
        raise BenchUsageError(str(exc)) from None
    check_environment(target)
    return target


def run_benchmark(
    target: BenchTarget,
    cases: Sequence[Case],
    timing: TimingConfig,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    peak_tflops: float | None = None,
    progress: Progress | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> BenchReport:
    """Open ``target``'s runner(s) once and time every case; returns the report (nothing printed).

    ``on_result`` receives each case's result as soon as it is measured."""
    report = BenchReport(
        machine=machine_info(target.device),
        versions=versions(),
        settings={
            "target": target.to_dict(),
            "timing": timing.to_dict(),
            "percentiles": list(percentiles),
            "peak_tflops": peak_tflops,
        },
    )
    with open_runners(target) as runners:
        for index, case in enumerate(cases):
            def report_progress(fraction: float, index: int = index, case: Case = case) -> None:
                if progress is not None:
                    progress(index, case, fraction)

            raw = time_case(runners, case.shape, timing, progress=report_progress)
            result = summarize_target(target, runners[0], raw, case, percentiles=percentiles, peak_tflops=peak_tflops)
            report.results.append(result)
            if on_result is not None:
                on_result(result)
    return report


def profile_layers(target: BenchTarget, case: Case, *, runs: int = 20) -> LayerProfile:
    """Per-layer time of ``target`` on one case (``benchmark --per-layer``): onnxruntime's profiler,
    OpenVINO's ``PERF_COUNT`` counters or a TensorRT ``IProfiler``. ``BenchUsageError`` for a backend without per-layer timing."""
    b = backend_row(target.backend)
    _check_per_layer(target)
    if b.profiler == "perf_count":  # OpenVINO's CPU plugin counters
        return profile_openvino(target.onnx or "", case.shape, precision=target.runtime_precision,
                                threads=target.threads, runs=runs)
    if b.profiler == "session":  # onnxruntime's own profiler on a session of its own
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if target.device == "cuda" else None
        return profile_onnxruntime(target.onnx or "", case.shape, threads=target.threads, runs=runs,
                                   providers=providers)
    with open_runners(target) as runners:
        return profile_tensorrt(runners[0], case.shape, runs=runs)


def _check_per_layer(target: BenchTarget) -> None:
    """``BenchUsageError`` where ``benchmark --per-layer`` cannot time ``target``'s layers."""
    if "per_layer" not in backend_row(target.backend).takes:
        raise BenchUsageError(f"--per-layer times layers on {words(takers('per_layer'))}, not on {target.backend}")
    if target.cuda_graph:
        raise BenchUsageError("--per-layer times plain enqueues (TensorRT reports nothing for graph replays): "
                              "drop --cuda-graph")


# --------------------------------------------------------------------------- the command's one call


@dataclass(frozen=True)
class BenchPlan:
    """Everything ``benchmark`` will do, checked before any of it runs."""

    target: BenchTarget
    cases: list[Case]
    timing: TimingConfig
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    peak_tflops: float | None = None
    per_layer: bool = False


@dataclass
class BenchRun:
    """A finished benchmark: the report and, with ``per_layer``, the per-layer times of the first case."""

    report: BenchReport
    layers: LayerProfile | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict() | ({"per_layer": self.layers.to_dict()} if self.layers else {})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def plan_benchmark(
    source: ModelSource,
    *,
    backend: str | None = None,
    options: RunnerOptions | None = None,
    device: str | None = None,
    batches: Sequence[int] = (1,),
    resolutions: Sequence[tuple[int, int]] | None = None,
    timing: TimingConfig | None = None,
    compile: bool = False,
    cuda_graph: bool = False,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    peak_tflops: float | None = None,
    per_layer: bool = False,
    plot: bool = False,
) -> BenchPlan:
    """Plan the target (``target_for``: the loader's plan of ``source`` on ``backend``), the sweep, and
    every check that comes before work (``prepare``); ``OptionError`` for what contradicts itself,
    ``DeployError`` for what this machine lacks (``plot``: matplotlib, for ``--plot``). ``device``: the
    ``--device`` given (None: ``options.device``, else the backend's first)."""
    if plot and not plot_available():
        raise BackendUnavailable("--plot needs matplotlib: pip install 'convmlp-deploy[plot]'")
    options = options or RunnerOptions()
    options = options.with_(device=device or options.device, compile=compile or options.compile,
                            cuda_graph=cuda_graph or options.cuda_graph, streams=options.streams or 1)
    target = target_for(source, backend, options)
    if not resolutions:  # none given: the size the model records (its preprocessing's input size)
        resolutions = (_recorded_size(target),)
    cases = expand_sweep(batches, resolutions)
    target = prepare(target, cases)
    if per_layer:
        _check_per_layer(target)
    return BenchPlan(target, cases, timing or TimingConfig(), tuple(percentiles), peak_tflops, per_layer)


def _recorded_size(target: BenchTarget) -> tuple[int, int]:
    """The input size a model file records; a variant's: its checkpoint's ``pretrained_cfg``, else its
    weights config (224)."""
    from convmlp.weights import PRETRAINED_CFGS, checkpoint_cfg

    source = target.plan.source
    if source.path is not None:
        if source.engine is not None:
            check_environment(target)  # what the machine lacks comes before what the sidecar says
        size = source.describe().preprocessing.input_size
    else:
        recorded = checkpoint_cfg(source.weights) if source.weights is not None else {}
        size = recorded.get("input_size") or PRETRAINED_CFGS[source.variant or "s"].input_size
    return int(size[1]), int(size[2])


def run_plan(
    plan: BenchPlan,
    *,
    progress: Progress | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> BenchRun:
    """Time every case of ``plan`` (``run_benchmark``), then the per-layer profile of the first case."""
    report = run_benchmark(plan.target, plan.cases, plan.timing, percentiles=plan.percentiles,
                           peak_tflops=plan.peak_tflops, progress=progress, on_result=on_result)
    layers = None
    if plan.per_layer:
        if on_status is not None:
            on_status(f"per-layer profile of {plan.cases[0].label} ...")
        layers = profile_layers(plan.target, plan.cases[0])
    return BenchRun(report, layers)
