"""OpenVINO IR (``export --openvino``) against the ONNX graph it came from, on OpenVINO's CPU plugin.

For each variant, ``export --openvino`` runs once (the pipeline users run: IR
converted, then validated on OpenVINO). Reported per variant: file sizes, the
conversion + validation time from the report, then OpenVINO's own load steps
with no model cache (``read_model`` and ``compile_model`` at 1x3x224x224, FP32
hint; median of ``--repeats``), and latency of the two files timed in alternating
rounds (``deploy.commands.bench.interleave``) at FP32 and BF16, where the CPU has BF16.

    python benchmarks/bench_openvino_ir.py --out results/                               # ~6 min on 2 cores
    python benchmarks/bench_openvino_ir.py --variants s --duration-s 0.3 --rounds 2 --out /tmp/ir   # quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.commands.bench import (  # noqa: E402
    BenchReport,
    Case,
    TimingConfig,
    machine_info,
    prepare,
    resolve_target,
    versions,
    write_text,
)
from deploy.commands.bench.interleave import run_interleaved  # noqa: E402
from deploy.commands.bench.report import machine_line  # noqa: E402

CASES = (Case(1, 224, 224),)
_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def export_ir(variant: str, folder: Path) -> dict[str, Any]:
    """``export -v VARIANT --openvino`` into ``folder``; the facts of its ONNX graph and IR."""
    from export.pipeline import ExportConfig, run_export

    result = run_export(ExportConfig(variant=variant, output_dir=folder, openvino=True))
    if not result.passed:
        raise SystemExit(f"export of {variant} failed: {result.failures}")
    graphs = result.report["graphs"]
    onnx_g, ir_g = graphs["fp32"], graphs["fp32.openvino"]
    rel = max(o["rel_l2"] for c in ir_g["validation"]["cases"] for o in c["outputs"])
    return {
        "onnx": onnx_g["path"], "ir": ir_g["path"],
        "onnx_mib": onnx_g["size_bytes"] / 2**20, "ir_mib": ir_g["size_bytes"] / 2**20,
        "ir_convert_validate_s": result.timings["fp32.openvino_convert_validate_s"],
        "ir_max_rel_l2": rel, "onnx_nodes": onnx_g["nodes"], "ir_layers": ir_g["nodes"],
    }


def load_times(path: str, repeats: int) -> dict[str, float]:
    """Median ``read_model`` and ``compile_model`` (1x3x224x224, f32, no cache) seconds."""
    import openvino as ov

    core = ov.Core()
    reads, compiles = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = core.read_model(path)
        t1 = time.perf_counter()
        model.reshape({model.inputs[0].get_any_name(): [1, 3, 224, 224]})
        core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        compiles.append(t2 - t1)
    return {"read_s": statistics.median(reads), "compile_s": statistics.median(compiles)}


def markdown(report: BenchReport, facts: dict[str, dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    lines = [
        "# OpenVINO IR vs ONNX graph on OpenVINO",
        "",
        f"Machine: {machine_line(report.machine, report.versions)}",
        "",
        "| variant | ONNX MiB | IR MiB (xml+bin) | IR convert + validate s | IR max rel L2 vs PyTorch | "
        "read ONNX ms | read IR ms | compile from ONNX s | compile from IR s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v, f in facts.items():
        lines.append(
            f"| {v.upper()} | {f['onnx_mib']:.1f} | {f['ir_mib']:.1f} | {f['ir_convert_validate_s']:.1f} | "
            f"{f['ir_max_rel_l2']:.1e} | {f['load']['onnx']['read_s'] * 1e3:.0f} | "
            f"{f['load']['ir']['read_s'] * 1e3:.0f} | {f['load']['onnx']['compile_s']:.2f} | "
            f"{f['load']['ir']['compile_s']:.2f} |"
        )
    lines += ["", "Latency at 1x3x224x224, interleaved (median ms; IR speed-up over the ONNX graph, > 1: faster, "
              "range over rounds):", "",
              "| variant | precision | ONNX graph ms | IR ms | IR speed-up |", "| --- | --- | ---: | ---: | --- |"]
    for p in pairs:
        s = p["speedup"]
        lines.append(f"| {p['variant'].upper()} | {p['precision']} | {p['onnx'].latency.median:.1f} | "
                     f"{p['ir'].latency.median:.1f} | {s.median:.2f}x ({s.low:.2f}-{s.high:.2f}) |")
    lines += ["", "All cases:", "", report.markdown_table(), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    ap.add_argument("--duration-s", type=float, default=3.0, help="timed seconds per file per case")
    ap.add_argument("--rounds", type=int, default=8, help="alternating rounds per case")
    ap.add_argument("--repeats", type=int, default=5, help="load repetitions (median)")
    ap.add_argument("--warmup-ms", type=float, default=500.0)
    ap.add_argument("--threads", type=int, default=2, help="OpenVINO inference threads")
    ap.add_argument("--out", type=Path, required=True, help="folder for openvino_ir.md and openvino_ir.json")
    args = ap.parse_args(argv)
    if args.duration_s <= 0 or args.threads < 1 or args.rounds < 1 or args.repeats < 1:
        ap.error("--duration-s must be > 0; --threads, --rounds and --repeats >= 1")

    from deploy.runners.openvino import cpu_capabilities

    precisions = ["f32"] + (["bf16"] if "BF16" in cpu_capabilities() else [])
    timing = TimingConfig(warmup_s=args.warmup_ms / 1e3, duration_s=args.duration_s, min_iterations=args.rounds)
    report = BenchReport(
        machine=machine_info("cpu"), versions=versions(),
        settings={"timing": timing.to_dict(), "threads": args.threads, "rounds": args.rounds,
                  "repeats": args.repeats, "precisions": precisions, "cases": [list(c.shape) for c in CASES],
                  "percentiles": [90.0, 99.0]},
    )
    facts: dict[str, dict[str, Any]] = {}
    pairs: list[dict[str, Any]] = []  # per variant and precision: both results and the IR's speed-up
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants:
            log(f"export {v} --openvino")
            f = facts[v] = export_ir(v, Path(tmp) / v)
            log(f"load {v}: ONNX graph vs IR")
            f["load"] = {"onnx": load_times(f["onnx"], args.repeats), "ir": load_times(f["ir"], args.repeats)}
            for precision in precisions:
                targets = [prepare(resolve_target(variant=v, onnx=p, backend="openvino", precision=precision,
                                                  threads=args.threads), CASES) for p in (f["onnx"], f["ir"])]
                log(f"time {v} {precision}: ONNX graph vs IR")
                part, found = run_interleaved(targets, CASES, timing, rounds=args.rounds, percentiles=(90.0, 99.0))
                report.results += part.results
                (onnx_r, ir_r), (speedup,) = part.results, found  # one case, targets in order
                pairs.append({"variant": v, "precision": precision, "onnx": onnx_r, "ir": ir_r, "speedup": speedup})

    data = report.to_dict()
    data["files"] = facts
    data["speedups"] = [{"precision": p["precision"], **p["speedup"].to_dict()} for p in pairs]
    args.out.mkdir(parents=True, exist_ok=True)
    md = write_text(args.out / "openvino_ir.md", markdown(report, facts, pairs))
    js = write_text(args.out / "openvino_ir.json", json.dumps(data, indent=2) + "\n")
    print(md.read_text())
    log(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
