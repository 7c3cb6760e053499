"""Where onnxruntime's CPU time goes, per operator type, for the graphs ``convmlp-deploy export`` ships.

Runs onnxruntime's own profiler (``SessionOptions.enable_profiling``) on the FP32
graph of each variant after onnxruntime's graph optimisations, through the same
library code as ``convmlp-deploy benchmark --per-layer`` (``deploy.commands.bench.layer_times``), so the table shows
the fused ops that actually run: ``BiasGelu``, NCHWc ``Conv`` with
``ReorderInput``/``ReorderOutput``) and sums kernel time per op type. It answers
"is there anything left to fuse or remove?" for the CPU speed work; the speed
comparison itself is ``bench_cpu.py``.

    python benchmarks/ort_op_profile.py --out results/                 # S/M/L at batch 1 x 224
    python benchmarks/ort_op_profile.py --variants l --batch 4 --size 320 --out /tmp/p
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import common
from bench_cpu import export_variant

from deploy.commands.bench.layer_times import profile_onnxruntime
from deploy.machine import machine_info, versions


def profile_graph(path: Path, shape: tuple[int, ...], threads: int, runs: int) -> dict[str, Any]:
    """Kernel time (ms per run) and node count per op type: the library code behind ``benchmark --per-layer``."""
    profile = profile_onnxruntime(path, shape, threads=threads, runs=runs)
    return {
        "runs": profile.runs,
        "kernel_ms_per_run": profile.total_ms,
        "ops": [{"op": o.op, "ms": o.ms, "pct": o.pct, "nodes": o.nodes} for o in profile.ops],
        "layers": [asdict(t) for t in profile.layers],
    }


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    common.add_variants(ap)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224, help="square input side")
    ap.add_argument("--threads", type=int, default=2, help="inference threads")
    ap.add_argument("--runs", type=int, default=20, help="profiled runs (after one warm-up run)")
    ap.add_argument("--onnx-dir", type=Path, default=None, help="reuse/keep exported ONNX here (default: temp)")
    common.add_out(ap, "ort_op_profile.md", "ort_op_profile.json")
    args = common.parse_args(ap, argv, counts=("batch", "runs"))
    if args.size < 32:
        ap.error("--size must be >= 32")

    shape = (args.batch, 3, args.size, args.size)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = args.onnx_dir or Path(tmp)
        onnx_dir.mkdir(parents=True, exist_ok=True)
        for v in args.variants:
            common.log(f"profile {v} at {shape}")
            results[v] = profile_graph(export_variant(v, onnx_dir), shape, args.threads, args.runs)

    lines = [
        f"## onnxruntime CPU time per op type, batch {args.batch} x {args.size}x{args.size}",
        "",
        common.machine_header(),
        "",
        f"{args.threads} intra-op threads, {args.runs} profiled runs, shipped FP32 graphs after "
        "onnxruntime's optimisations. ms = kernel time per run.",
        "",
        "| variant | op | ms | % of kernel time | nodes |",
        "|---|---|---:|---:|---:|",
    ]
    for v, r in results.items():
        for row in r["ops"]:
            if row["pct"] >= 0.5:
                lines.append(f"| {v} | {row['op']} | {row['ms']:.2f} | {row['pct']:.1f} | {row['nodes']} |")
        lines.append(f"| {v} | **all kernels** | **{r['kernel_ms_per_run']:.2f}** | 100 | |")
    data = {"machine": machine_info("cpu"), "versions": versions(), "shape": list(shape), "threads": args.threads,
            "results": results}
    common.write_results(args.out, "ort_op_profile", "\n".join(lines), data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
