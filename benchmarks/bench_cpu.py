"""CPU: PyTorch eager vs onnxruntime, FP32, ConvMLP S/M/L, the same library code as
``convmlp-deploy benchmark``.

Cases: batch 1 x 224, batch 4 x 320, batch 1 x 512. Both runtimes get the same
number of threads (``torch.set_num_threads`` / onnxruntime intra-op threads).
Writes ``bench_cpu.md`` and ``bench_cpu.json`` into ``--out``; the ratio column
is onnxruntime's speed-up in images/s over PyTorch.

    python benchmarks/bench_cpu.py --out results/              # full run, ~3 min on 2 cores
    python benchmarks/bench_cpu.py --variants s --duration-s 0.5 --out /tmp/b   # quick check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.bench import (  # noqa: E402
    BenchReport,
    Case,
    TimingConfig,
    machine_info,
    prepare,
    resolve_target,
    run_benchmark,
    versions,
    write_text,
)
from deploy.bench.report import machine_line  # noqa: E402

CASES = (Case(1, 224, 224), Case(4, 320, 320), Case(1, 512, 512))


def export_variant(variant: str, folder: Path) -> Path:
    """FP32 ONNX of ``variant`` (synthetic weights: speed does not depend on their values)."""
    from convmlp.spec import io_spec
    from deploy.validate import reference_model
    from export.onnx import export_onnx

    path = folder / f"convmlp_{variant}_fp32.onnx"
    if not path.is_file():
        export_onnx(reference_model(variant), io_spec(variant), path, opset=17)
    return path


def comparison(report: BenchReport) -> list[dict[str, Any]]:
    """One row per (variant, case): images/s and median latency of each runtime and the ORT speed-up."""
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in report.results:
        key = (r.variant, r.batch, r.height, r.width)
        row = by_key.setdefault(
            key, {"variant": r.variant, "batch": r.batch, "resolution": f"{r.height}x{r.width}", "gmacs": r.gmacs}
        )
        row[f"{r.backend}_ips"] = r.images_per_s
        row[f"{r.backend}_median_ms"] = r.latency.median
        row[f"{r.backend}_cv"] = r.latency.cv
    for row in by_key.values():
        t, o = row.get("torch_ips"), row.get("onnxruntime_ips")
        row["ort_speedup"] = o / t if t and o else None
    return list(by_key.values())


def markdown(report: BenchReport, rows: list[dict[str, Any]], threads: int) -> str:
    def f(v: Any, fmt: str = ".4g") -> str:
        return "-" if v is None else format(v, fmt)

    out = [
        "## CPU: PyTorch eager vs onnxruntime (FP32)",
        "",
        f"Machine: {machine_line(report.machine, report.versions)}",
        "",
        f"Threads: {threads} for both runtimes. Timing: "
        + ", ".join(f"{k}={v}" for k, v in report.settings["timing"].items() if v is not None),
        "",
        "| variant | batch | resolution | GMACs/img | torch img/s | torch median ms "
        "| ORT img/s | ORT median ms | ORT speed-up |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['variant']} | {r['batch']} | {r['resolution']} | {f(r['gmacs'], '.3f')} "
            f"| {f(r.get('torch_ips'))} | {f(r.get('torch_median_ms'))} "
            f"| {f(r.get('onnxruntime_ips'))} | {f(r.get('onnxruntime_median_ms'))} "
            f"| {f(r['ort_speedup'], '.2f')}x |"
        )
    out += ["", "All cases:", "", report.markdown_table(), ""]
    notes = report.warning_lines()
    if notes:
        out += ["Warnings:", "", *notes, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    ap.add_argument("--duration-s", type=float, default=3.0, help="measured time per case")
    ap.add_argument("--warmup-ms", type=float, default=200.0)
    ap.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    ap.add_argument("--onnx-dir", type=Path, default=None, help="reuse/keep exported ONNX here (default: temp)")
    ap.add_argument("--out", type=Path, required=True, help="folder for bench_cpu.md and bench_cpu.json")
    args = ap.parse_args(argv)
    if args.duration_s <= 0 or args.threads < 1:
        ap.error("--duration-s must be > 0 and --threads >= 1")

    timing = TimingConfig(warmup_s=args.warmup_ms / 1e3, duration_s=args.duration_s)
    report = BenchReport(
        machine=machine_info("cpu"),
        versions=versions(),
        settings={"timing": timing.to_dict(), "threads": args.threads, "variants": args.variants,
                  "cases": [list(c.shape) for c in CASES], "percentiles": [90.0, 95.0, 99.0]},
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = args.onnx_dir or Path(tmp)
        onnx_dir.mkdir(parents=True, exist_ok=True)
        for v in args.variants:
            onnx = export_variant(v, onnx_dir)
            for target in (
                resolve_target(variant=v, backend="torch", threads=args.threads),
                resolve_target(variant=v, onnx=onnx, threads=args.threads),
            ):
                target = prepare(target, CASES)
                print(f"[{time.perf_counter() - start:6.1f}s] {target.backend} {v}", file=sys.stderr, flush=True)
                report.results += run_benchmark(target, CASES, timing).results

    rows = comparison(report)
    data = report.to_dict()
    data["comparison"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    md = write_text(args.out / "bench_cpu.md", markdown(report, rows, args.threads))
    js = write_text(args.out / "bench_cpu.json", json.dumps(data, indent=2) + "\n")
    print(md.read_text())
    print(f"wrote {md} and {js} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
