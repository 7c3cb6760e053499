"""CPU: PyTorch eager vs onnxruntime, FP32, ConvMLP S/M/L, timed interleaved, with the
machine's matmul roofline.

Cases: batch 1 x 224, batch 4 x 320, batch 1 x 512. Both runtimes get the same
number of threads (``torch.set_num_threads`` / onnxruntime intra-op threads) and
run the graph ``convmlp-deploy export`` ships (onnxslim-simplified, validated).

The two runtimes are timed in alternating rounds (``deploy.commands.bench.interleave``),
so a VM whose speed drifts moves both alike; the speed-up is the median over
rounds of the per-round ratio, with its range. Before the runs the script
measures the machine's FP32 matmul peak (the better of PyTorch and onnxruntime
on a 2048 x 2048 matmul, same threads) and reports each runtime's share of it
and the *ceiling*: the speed-up over PyTorch that a runtime running every MAC
at that peak would reach. A target above the ceiling cannot be met on the
machine by any runtime that computes the same MACs.

    python benchmarks/bench_cpu.py --out results/              # full run, ~8 min on 2 cores
    python benchmarks/bench_cpu.py --variants s --duration-s 0.5 --rounds 4 --out /tmp/b   # quick check
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

from deploy.commands.bench import BenchReport, Case, prepare, resolve_target
from deploy.commands.bench.interleave import Speedup

CASES = (Case(1, 224, 224), Case(4, 320, 320), Case(1, 512, 512))
TARGET_SPEEDUP = 2.0  # the export issue's target, for batch 1 x 224 and batch 4 x 320
TARGET_CASES = (Case(1, 224, 224), Case(4, 320, 320))
PEAK_N = 2048


def export_variant(variant: str, folder: Path) -> Path:
    """The FP32 graph ``convmlp-deploy export`` ships (simplified and validated; synthetic weights,
    since speed does not depend on their values)."""
    from export.pipeline import ExportConfig, artifact_paths, run_export

    path = artifact_paths(variant, folder)["fp32"]
    if not path.is_file():
        result = run_export(ExportConfig(variant=variant, output_dir=folder))
        if not result.passed:
            raise SystemExit(f"export of {variant} failed validation: {'; '.join(result.failures)}")
    return path


def _best_tflops(fn: Any, flops: float, repeats: int = 5, inner: int = 10) -> float:
    fn()  # warm-up (weight packing, thread start)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return flops / best / 1e12


def measure_cpu_peak(threads: int, n: int = PEAK_N) -> dict[str, float]:
    """FP32 TFLOP/s of an ``n x n x n`` matmul in PyTorch and in onnxruntime (best of 5 x 10)."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    flops = 2.0 * n**3
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        torch_peak = _best_tflops(lambda: torch.mm(a, b, out=out), flops)
    finally:
        torch.set_num_threads(old)

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((n, n), np.float32)
    ort_peak = _best_tflops(lambda: sess.run(None, {"a": x}), flops)
    return {"torch": torch_peak, "onnxruntime": ort_peak}


def comparison(report: BenchReport, speedups: list[Speedup], peak: float) -> list[dict[str, Any]]:
    """One row per (variant, case): both runtimes' median latency and share of the peak, the
    interleaved speed-up with its range, and the roofline ceiling."""
    by_key = {(r.variant, r.batch, r.height, r.width, r.backend): r for r in report.results}
    rows = []
    for s in speedups:
        key = (s.variant, s.case.batch, s.case.height, s.case.width)
        t, o = by_key[(*key, "torch")], by_key[(*key, "onnxruntime")]
        ideal_ms = 2.0 * (t.gmacs or 0.0) * 1e9 * s.case.batch / (peak * 1e12) * 1e3
        rows.append({
            "variant": s.variant, "batch": s.case.batch, "resolution": f"{s.case.height}x{s.case.width}",
            "gmacs": t.gmacs,
            "torch_median_ms": t.latency.median, "torch_cv": t.latency.cv, "torch_peak_pct": 100 * (t.peak_fraction or 0),
            "ort_median_ms": o.latency.median, "ort_cv": o.latency.cv, "ort_peak_pct": 100 * (o.peak_fraction or 0),
            "speedup": s.median, "speedup_min": s.low, "speedup_max": s.high,
            "ideal_ms": ideal_ms, "ceiling": t.latency.median / ideal_ms if ideal_ms else None,
            "target": TARGET_SPEEDUP if s.case in TARGET_CASES else None,
        })
    return rows


def markdown(report: BenchReport, rows: list[dict[str, Any]], peaks: dict[str, float], args: Any) -> str:
    def f(v: Any, fmt: str = ".3g") -> str:
        return "-" if v is None else format(v, fmt)

    out = [
        "## CPU: PyTorch eager vs onnxruntime (FP32), interleaved",
        "",
        common.machine_header(),
        "",
        f"Threads: {args.threads} for both runtimes. {args.rounds} alternating rounds per case, "
        f"{args.duration_s} s of timing per runtime per case. "
        f"FP32 matmul peak ({args.peak_n}^3, {args.threads} threads): "
        + ", ".join(f"{k} {v * 1e3:.0f} GFLOP/s" for k, v in peaks.items())
        + "; the better one is the roofline.",
        "",
        "| variant | batch | resolution | GMACs/img | torch ms | ORT ms | ORT speed-up (range over rounds) "
        "| torch % peak | ORT % peak | ceiling | target |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        target = "-"
        if r["target"]:
            met = "met" if r["speedup"] >= r["target"] else "not met"
            target = f"{r['target']:.0f}x: {met}" + (" (above ceiling)" if r["ceiling"] < r["target"] else "")
        out.append(
            f"| {r['variant']} | {r['batch']} | {r['resolution']} | {f(r['gmacs'], '.3f')} "
            f"| {f(r['torch_median_ms'], '.1f')} | {f(r['ort_median_ms'], '.1f')} "
            f"| **{r['speedup']:.2f}x** ({r['speedup_min']:.2f}-{r['speedup_max']:.2f}) "
            f"| {r['torch_peak_pct']:.0f}% | {r['ort_peak_pct']:.0f}% | {f(r['ceiling'], '.2f')}x | {target} |"
        )
    return "\n".join(out + common.all_cases(report))


def main(argv: list[str] | None = None) -> int:
    ap = common.interleaved_parser(__doc__, "bench_cpu", CASES, duration_s=6.0, rounds=12, warmup_ms=500.0)
    common.add_peak(ap, PEAK_N)
    ap.add_argument("--onnx-dir", type=Path, default=None, help="reuse/keep exported ONNX here (default: temp)")
    args = common.parse_args(ap, argv)
    cases = tuple(args.cases)

    peaks = measure_cpu_peak(args.threads, args.peak_n)
    peak = max(peaks.values())
    common.log("FP32 matmul peak " + ", ".join(f"{k} {v * 1e3:.0f} GFLOP/s" for k, v in peaks.items()))
    timing = common.timing_config(args)
    report = common.bench_report({"timing": timing.to_dict(), "threads": args.threads, "variants": args.variants,
                                  "rounds": args.rounds, "cases": common.shapes(cases),
                                  "percentiles": list(common.PERCENTILES), "peak_tflops": peaks})
    speedups: list[Speedup] = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = args.onnx_dir or Path(tmp)
        onnx_dir.mkdir(parents=True, exist_ok=True)
        for v in args.variants:
            common.log(f"export {v}")
            onnx = export_variant(v, onnx_dir)
            targets = [prepare(resolve_target(variant=v, backend="torch", threads=args.threads), cases),
                       prepare(resolve_target(variant=v, onnx=onnx, threads=args.threads), cases)]
            common.time_interleaved(report, speedups, targets, cases, timing, args.rounds, f"{v}: torch vs onnxruntime",
                                    peak_tflops=peak)

    rows = comparison(report, speedups, peak)
    return common.write_report(args.out, "bench_cpu", markdown(report, rows, peaks, args), report, speedups,
                               comparison=rows)


if __name__ == "__main__":
    sys.exit(main())
