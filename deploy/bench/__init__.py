"""Benchmark any runner the way trtexec does: one loop over PyTorch, onnxruntime and TensorRT.

    >>> from deploy.bench import TimingConfig, expand_sweep, resolve_target, run_benchmark
    >>> target = resolve_target(variant="s", backend="torch", threads=2)
    >>> report = run_benchmark(target, expand_sweep([1, 8], [(224, 224)]), TimingConfig(duration_s=1))
    >>> print(report.to_markdown())

Library layout: ``stats`` (pure numbers), ``timing`` (the loop), ``targets``
(what to run and the checks before running it), ``report`` (results and files).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .layers import PER_LAYER_BACKENDS, LayerProfile, profile_onnxruntime
from .report import (
    BenchReport,
    CaseResult,
    machine_info,
    plot_report,
    summarize_case,
    summarize_target,
    versions,
    write_text,
)
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
)
from .timing import Case, RawTimings, TimingConfig, expand_sweep, time_case

__all__ = [
    "BACKENDS",
    "DEFAULT_PERCENTILES",
    "BenchReport",
    "BenchTarget",
    "BenchUsageError",
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
    """All checks that come before any work: shapes against the model file (``BenchUsageError``),
    then this machine's runtimes (``BackendUnavailable``). Returns the completed target."""
    from ..resources import TooLarge, check_fits

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
    """Per-layer time of ``target`` on one case (``benchmark --per-layer``): onnxruntime's profiler or a
    TensorRT ``IProfiler``. ``BenchUsageError`` for a backend without per-layer timing."""
    if target.backend not in PER_LAYER_BACKENDS:
        raise BenchUsageError(
            f"--per-layer times layers on {' and '.join(PER_LAYER_BACKENDS)}, not on {target.backend}"
        )
    if target.backend == "onnxruntime":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if target.device == "cuda" else None
        return profile_onnxruntime(target.onnx or "", case.shape, threads=target.threads, runs=runs,
                                   providers=providers)
    if target.cuda_graph:
        raise BenchUsageError("--per-layer times plain enqueues (TensorRT reports nothing for graph replays): "
                              "drop --cuda-graph")
    from ..trt.layer_profile import profile_tensorrt

    with open_runners(target) as runners:
        return profile_tensorrt(runners[0], case.shape, runs=runs)
