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

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from deploy.commands.bench import BenchReport, Case, prepare, resolve_target

CASES = (Case(1, 224, 224),)


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


def load_times(path: str, repeats: int, shape: tuple[int, ...] = (1, 3, 224, 224)) -> dict[str, float]:
    """Median ``read_model`` and ``compile_model`` (at ``shape``, f32, no cache) seconds."""
    import openvino as ov

    core = ov.Core()
    reads, compiles = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = core.read_model(path)
        t1 = time.perf_counter()
        model.reshape({model.inputs[0].get_any_name(): list(shape)})
        core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        compiles.append(t2 - t1)
    return {"read_s": statistics.median(reads), "compile_s": statistics.median(compiles)}


def markdown(report: BenchReport, facts: dict[str, dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    lines = [
        "# OpenVINO IR vs ONNX graph on OpenVINO",
        "",
        common.machine_header(),
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
    shape = "x".join(map(str, report.settings["cases"][0]))
    lines += ["", f"Latency at {shape}, interleaved (median ms; IR speed-up over the ONNX graph, > 1: faster, "
              "range over rounds):", "",
              "| variant | precision | ONNX graph ms | IR ms | IR speed-up |", "| --- | --- | ---: | ---: | --- |"]
    for p in pairs:
        s = p["speedup"]
        lines.append(f"| {p['variant'].upper()} | {p['precision']} | {p['onnx'].latency.median:.1f} | "
                     f"{p['ir'].latency.median:.1f} | {s.median:.2f}x ({s.low:.2f}-{s.high:.2f}) |")
    return "\n".join(lines + common.all_cases(report))


def main(argv: list[str] | None = None) -> int:
    ap = common.interleaved_parser(__doc__, "openvino_ir", CASES, duration_s=3.0, rounds=8, warmup_ms=500.0)
    ap.add_argument("--repeats", type=int, default=5, help="load repetitions (median)")
    args = common.parse_args(ap, argv, counts=("repeats",))
    cases = tuple(args.cases[:1])  # one case: the load times and the pairs are per case

    from deploy.runners.openvino import cpu_capabilities

    precisions = ["f32"] + (["bf16"] if "BF16" in cpu_capabilities() else [])
    timing = common.timing_config(args)
    report = common.bench_report({"timing": timing.to_dict(), "threads": args.threads, "rounds": args.rounds,
                                  "repeats": args.repeats, "precisions": precisions, "cases": common.shapes(cases),
                                  "percentiles": [90.0, 99.0]})
    facts: dict[str, dict[str, Any]] = {}
    pairs: list[dict[str, Any]] = []  # per variant and precision: both results and the IR's speed-up
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants:
            common.log(f"export {v} --openvino")
            f = facts[v] = export_ir(v, Path(tmp) / v)
            common.log(f"load {v}: ONNX graph vs IR")
            f["load"] = {k: load_times(f[k], args.repeats, cases[0].shape) for k in ("onnx", "ir")}
            for precision in precisions:
                targets = [prepare(resolve_target(variant=v, onnx=p, backend="openvino", precision=precision,
                                                  threads=args.threads), cases) for p in (f["onnx"], f["ir"])]
                (onnx_r, ir_r), (speedup,) = common.time_interleaved(  # one case, targets in order
                    report, [], targets, cases, timing, args.rounds, f"{v} {precision}: ONNX graph vs IR",
                    percentiles=(90.0, 99.0))
                pairs.append({"variant": v, "precision": precision, "onnx": onnx_r, "ir": ir_r, "speedup": speedup})

    return common.write_report(args.out, "openvino_ir", markdown(report, facts, pairs), report,
                               [{"precision": p["precision"], **p["speedup"].to_dict()} for p in pairs], files=facts)


if __name__ == "__main__":
    sys.exit(main())
