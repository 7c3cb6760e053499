"""GPU: PyTorch eager FP32/FP16, torch.compile FP16 and TensorRT, ConvMLP S/M/L, with
achieved TFLOP/s against a matmul peak measured on the same GPU.

Cases: batch 1, 32 and 128 at 224x224, batch 8 at 512x512. The peak is a large
``torch.matmul`` timed with CUDA events in FP16 and in FP32 (PyTorch's default
matmul precision, so no TF32, as the FP32 model runs); FP16 rows are compared
with the FP16 peak, FP32 rows with the FP32 peak. TensorRT rows need ``tensorrt``
and engines built with ``convmlp-deploy build`` in ``--engines DIR`` (each
engine's sidecar names its variant); otherwise the report says why they are
missing. torch.compile rows run last and are skipped, with a note, when the
time budget (``--budget-s``, default 400 s) would be exceeded, so a run ends
within about 8 minutes on an H100.

    python benchmarks/bench_gpu.py --out results/ [--engines engines/]
    python benchmarks/bench_gpu.py --out results/ --plan      # print the plan only
    python benchmarks/bench_gpu.py --variants s --cases 1x64 --duration-s 0.05 --peak-n 1024 --budget-s 0 --out /tmp/g
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import common

from deploy.commands.bench import (
    BenchReport,
    BenchTarget,
    BenchUsageError,
    Case,
    check_cases,
    prepare,
    resolve_target,
    run_benchmark,
)
from deploy.errors import DeployError

CASES = (Case(1, 224, 224), Case(32, 224, 224), Case(128, 224, 224), Case(8, 512, 512))
#: (label, torch options); compile last: its first iterations compile and take the longest
TORCH_CONFIGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("eager fp32", {"precision": "fp32"}),
    ("eager fp16", {"precision": "fp16"}),
    ("compile fp16", {"precision": "fp16", "compile": True}),
)
#: Seconds set aside for torch.compile's first compilations of one variant (all four shapes).
COMPILE_ALLOWANCE_S = 120.0

COLUMNS = [
    ("runner", "runner"), ("variant", "variant"), ("batch", "batch"), ("resolution", "resolution"),
    ("gmacs", "GMACs/img"), ("ips", "images/s"), ("median_ms", "median ms"), ("p99_ms", "p99 ms"),
    ("compute_ms", "compute ms"), ("enqueue_ms", "enqueue ms"), ("cv_pct", "CV %"),
    ("tflops", "TFLOP/s"), ("peak_pct", "% peak"), ("warnings", "warnings"),
]


def measure_matmul_peak(dtype: Any, n: int = 8192, iterations: int = 20) -> float:
    """TFLOP/s of ``n x n`` matmuls in ``dtype``, timed with CUDA events after a warm-up."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    c = torch.empty(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        torch.mm(a, b, out=c)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3
    del a, b, c
    torch.cuda.empty_cache()
    return 2.0 * n**3 * iterations / seconds / 1e12


def find_engines(folder: Path | None, variants: list[str]) -> tuple[dict[str, list[Path]], list[str]]:
    """Engines in ``folder`` grouped by the variant their sidecar names, and notes on what is missing."""
    from deploy.modelfile.engine import read_manifest

    found: dict[str, list[Path]] = {v: [] for v in variants}
    notes: list[str] = []
    if folder is None:
        return found, ["TensorRT rows missing: no --engines DIR given (build engines with 'convmlp-deploy build')"]
    for path in sorted(folder.glob("*.engine")) + sorted(folder.glob("*.plan")):
        try:
            variant = read_manifest(path).variant
        except DeployError as exc:
            notes.append(f"{path.name} skipped: {exc}")
            continue
        if variant in found:
            found[variant].append(path)
    notes += [f"TensorRT rows missing for {v}: no engine in {folder} names it" for v in variants if not found[v]]
    return found, notes


def covered(target: BenchTarget, cases: list[Case]) -> list[Case]:
    out = []
    for case in cases:
        try:
            check_cases(target, [case])
        except BenchUsageError:
            continue
        out.append(case)
    return out


def plan(args: argparse.Namespace) -> list[str]:
    lines = [f"cases: {', '.join(c.label for c in args.cases)}", f"variants: {', '.join(args.variants)}"]
    for label, _ in TORCH_CONFIGS:
        lines.append(f"torch {label}: {len(args.variants) * len(args.cases)} cases")
    lines.append(f"tensorrt (+ --cuda-graph): engines from {args.engines or '(none given)'}")
    per_case = args.warmup_ms / 1e3 + args.duration_s
    lines.append(f"timing: warm-up {args.warmup_ms:g} ms + {args.duration_s:g} s per case (>= 10 iterations); "
                 f"budget {args.budget_s:g} s")
    lines.append(f"estimate without compilation: ~{len(TORCH_CONFIGS) * len(args.variants) * len(args.cases) * per_case:.0f} s")
    return lines


def markdown(report: BenchReport, peaks: dict[str, float], notes: list[str]) -> str:
    out = [
        "## GPU: PyTorch eager / torch.compile / TensorRT",
        "",
        common.machine_header("cuda"),
        "",
        f"Measured matmul peak ({report.settings['peak_n']}x{report.settings['peak_n']}): "
        + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in peaks.items())
        + ". % peak compares each row with the peak of its precision.",
        "",
        "Timing: " + ", ".join(f"{k}={v}" for k, v in report.settings["timing"].items() if v is not None),
        "",
        report.markdown_table(COLUMNS),
        "",
    ]
    if notes:
        out += ["Missing or skipped rows:", "", *[f"- {n}" for n in notes], ""]
    warns = report.warning_lines()
    if warns:
        out += ["Warnings:", "", *warns, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    common.add_out(ap, "bench_gpu.md", "bench_gpu.json")
    common.add_variants(ap)
    common.add_cases(ap, CASES)
    ap.add_argument("--engines", type=Path, default=None, help="folder of TensorRT engines (+ .json sidecars)")
    common.add_timing(ap, duration_s=1.0, warmup_ms=200.0, threads=None)
    common.add_peak(ap, 8192)
    ap.add_argument("--budget-s", type=float, default=400.0, help="skip torch.compile rows that might end past this")
    ap.add_argument("--plan", action="store_true", help="print what would run and exit")
    args = common.parse_args(ap, argv)
    cases = list(args.cases)
    if args.plan:
        print("\n".join(plan(args)))
        return 0

    import torch

    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA GPU and a CUDA build of PyTorch; none is visible here", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    log = common.log

    peaks = {"fp16": measure_matmul_peak(torch.float16, args.peak_n),
             "fp32": measure_matmul_peak(torch.float32, args.peak_n)}
    log("matmul peak " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in peaks.items()))
    timing = common.timing_config(args)
    report = common.bench_report({
        "timing": timing.to_dict(),
        "cases": common.shapes(cases),
        "peak_tflops": peaks,
        "peak_n": args.peak_n,
        "cudnn_benchmark": True,
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
    }, device="cuda")
    notes: list[str] = []

    def run(target: BenchTarget, cases: list[Case], what: str) -> None:
        log(what)
        try:
            target = prepare(target, cases)
            peak = peaks["fp16" if target.precision == "fp16" else "fp32"]
            report.results.extend(run_benchmark(target, cases, timing, peak_tflops=peak).results)
        except (DeployError, BenchUsageError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            notes.append(f"{what} failed: {first}")
            log(notes[-1])
        finally:
            gc.collect()
            torch.cuda.empty_cache()

    per_case = timing.warmup_s + args.duration_s + 0.5
    for label, opts in TORCH_CONFIGS[:2]:
        for v in args.variants:
            run(resolve_target(variant=v, backend="torch", device="cuda", **opts), cases, f"torch {label} {v}")

    from deploy.trt.version import import_tensorrt

    try:
        import_tensorrt()
    except DeployError as exc:
        notes.append(f"TensorRT rows missing: {exc}")
    else:
        engines, engine_notes = find_engines(args.engines, args.variants)
        notes += engine_notes
        for v, paths in engines.items():
            for path in paths:
                for graph in (False, True):
                    target = resolve_target(engine=path, variant=v, cuda_graph=graph)
                    found = covered(target, cases)
                    if len(found) < len(cases):
                        notes.append(f"{path.name}: profiles do not cover "
                                     f"{', '.join(c.label for c in cases if c not in found)}")
                    if found:
                        run(target, found, f"tensorrt {path.name}{' cuda-graph' if graph else ''}")

    label, opts = TORCH_CONFIGS[2]
    for v in args.variants:
        elapsed = time.perf_counter() - start
        if elapsed + COMPILE_ALLOWANCE_S + len(cases) * per_case > args.budget_s:
            notes.append(f"torch {label} {v} skipped: {elapsed:.0f} s used of the {args.budget_s:g} s budget")
            log(notes[-1])
            continue
        run(resolve_target(variant=v, backend="torch", device="cuda", **opts), cases, f"torch {label} {v}")

    data = report.to_dict()
    data["peak_tflops"] = peaks
    data["notes"] = notes
    common.write_results(args.out, "bench_gpu", markdown(report, peaks, notes), data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
