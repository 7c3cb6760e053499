"""The two torch ONNX exporters side by side: graph size and onnxruntime speed, interleaved.

For each variant, ``export`` runs twice through the same pipeline (simplified and
validated against PyTorch): once with ``--exporter torchscript`` and once with
``--exporter dynamo`` (the default). Reported per variant: node counts before and
after simplification, op counts that differ, export time; then onnxruntime FP32
latency on the graphs, timed in alternating rounds (``deploy.commands.bench.interleave``),
with each graph's speed-up over the TorchScript graph (> 1: faster). A third graph,
the dynamo export without ``export.rewrite.canonical_gelu``, shows what that
rewrite is worth.

    python benchmarks/bench_exporters.py --out results/                                   # ~8 min on 2 cores
    python benchmarks/bench_exporters.py --variants s --duration-s 0.3 --rounds 2 --out /tmp/e   # quick check
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
from deploy.commands.bench.interleave import Speedup, run_interleaved  # noqa: E402
from deploy.commands.bench.report import machine_line  # noqa: E402

CASES = (Case(1, 224, 224), Case(4, 320, 320))
EXPORTERS = ("torchscript", "dynamo")
RAW = "dynamo, no GELU rewrite"

_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def export_with(variant: str, exporter: str, folder: Path) -> dict[str, Any]:
    """Export the FP32 classifier with ``exporter`` as ``convmlp-deploy export`` does; return its facts."""
    import onnx

    from export.onnx import export_onnx_proto, op_counts
    from export.pipeline import ExportConfig, artifact_paths, run_export

    t0 = time.perf_counter()
    result = run_export(ExportConfig(variant=variant, output_dir=folder, exporter=exporter))
    seconds = time.perf_counter() - t0
    if not result.passed:
        raise SystemExit(f"{exporter} export of {variant} failed validation: {'; '.join(result.failures)}")
    path = artifact_paths(variant, folder)["fp32"]
    graph = result.report["graphs"]["fp32"]
    # the raw exporter graph, for its op counts before simplification
    from convmlp.spec import io_spec
    from deploy.loader import reference_model

    raw = export_onnx_proto(reference_model(variant), io_spec(variant), exporter=exporter).proto
    return {
        "exporter": exporter,
        "path": str(path),
        "opset": result.report["opset"],
        "nodes_exported": graph["simplification"]["nodes_before"],
        "nodes_shipped": graph["nodes"],
        "simplifier": graph["simplification"],
        "ops_exported": op_counts(raw),
        "ops_shipped": op_counts(onnx.load(str(path), load_external_data=False)),
        "export_s": round(result.report["timings_s"].get("fp32_export_s", seconds), 2),
        "max_rel_l2": max(c["outputs"][0]["rel_l2"] for c in graph["validation"]["cases"]),
    }


def export_raw_dynamo(variant: str, folder: Path) -> str:
    """The dynamo graph as torch writes it (no ``canonical_gelu``), simplified like the shipped one."""
    from convmlp.spec import io_spec
    from deploy.artifacts import atomic_write_bytes
    from deploy.loader import reference_model
    from export.onnx import export_onnx_proto, set_metadata
    from export.simplify import simplify

    spec = io_spec(variant)
    proto, _ = simplify(export_onnx_proto(reference_model(variant), spec, rewrite=False).proto, spec, "onnxslim")
    set_metadata(proto, {"variant": variant, "kind": "classifier", "precision": "fp32"})
    path = folder / f"convmlp_{variant}.raw-dynamo.onnx"
    atomic_write_bytes(path, proto.SerializeToString())
    return str(path)


def markdown(report: BenchReport, graphs: dict[str, dict[str, dict[str, Any]]], speedups: list[Speedup],
             args: Any) -> str:
    out = [
        "## Exporters: TorchScript vs dynamo (torch.export) graphs, onnxruntime FP32, interleaved",
        "",
        f"Machine: {machine_line(report.machine, report.versions)}",
        "",
        f"Threads: {args.threads}. {args.rounds} alternating rounds per case, {args.duration_s} s of timing "
        "per graph per case. Both graphs are what `convmlp-deploy export` ships with that exporter "
        "(onnxslim, validated).",
        "",
        "| variant | exporter | opset | nodes exported | nodes shipped | export s | max rel L2 vs PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for v, by in graphs.items():
        for e in EXPORTERS:
            g = by[e]
            out.append(
                f"| {v} | {e} | {g['opset']} | {g['nodes_exported']} | {g['nodes_shipped']} "
                f"| {g['export_s']:.1f} | {g['max_rel_l2']:.1e} |"
            )
    out += [
        "",
        "| variant | batch | resolution | torchscript graph ms | dynamo graph ms | dynamo speed-up "
        f"(range over rounds) | {RAW} ms | its speed-up |",
        "|---|---:|---|---:|---:|---|---:|---|",
    ]
    rows: dict[tuple[Any, ...], list[Any]] = {}
    for r in report.results:  # run_interleaved appends each case's results in target order
        rows.setdefault((r.variant, r.batch, r.height, r.width), []).append(r)
    for s, raw in zip(speedups[0::2], speedups[1::2], strict=True):
        ts, dy, rw = rows[(s.variant, s.case.batch, s.case.height, s.case.width)]
        out.append(
            f"| {s.variant} | {s.case.batch} | {s.case.height}x{s.case.width} | {ts.latency.median:.1f} "
            f"| {dy.latency.median:.1f} | **{s.median:.2f}x** ({s.low:.2f}-{s.high:.2f}) "
            f"| {rw.latency.median:.1f} | {raw.median:.2f}x ({raw.low:.2f}-{raw.high:.2f}) |"
        )
    out += ["", "Ops that differ between the shipped graphs (torchscript -> dynamo):", ""]
    for v, by in graphs.items():
        a, b = by["torchscript"]["ops_shipped"], by["dynamo"]["ops_shipped"]
        diff = {op: (a.get(op, 0), b.get(op, 0)) for op in sorted(set(a) | set(b)) if a.get(op, 0) != b.get(op, 0)}
        out.append(f"- {v}: " + (", ".join(f"{op} {x} -> {y}" for op, (x, y) in diff.items()) or "none"))
    out += ["", "All cases:", "", report.markdown_table(), ""]
    notes = report.warning_lines()
    if notes:
        out += ["Warnings:", "", *notes, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    ap.add_argument("--duration-s", type=float, default=4.0, help="timed seconds per graph per case")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds per case")
    ap.add_argument("--warmup-ms", type=float, default=500.0)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--out", type=Path, required=True, help="folder for exporters.md and exporters.json")
    args = ap.parse_args(argv)
    if args.duration_s <= 0 or args.threads < 1 or args.rounds < 1:
        ap.error("--duration-s must be > 0, --threads and --rounds >= 1")

    timing = TimingConfig(warmup_s=args.warmup_ms / 1e3, duration_s=args.duration_s, min_iterations=args.rounds)
    report = BenchReport(
        machine=machine_info("cpu"), versions=versions(),
        settings={"timing": timing.to_dict(), "threads": args.threads, "rounds": args.rounds,
                  "cases": [list(c.shape) for c in CASES], "percentiles": [90.0, 95.0, 99.0]},
    )
    graphs: dict[str, dict[str, dict[str, Any]]] = {}
    speedups: list[Speedup] = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants:
            graphs[v] = {}
            for e in EXPORTERS:
                log(f"export {v} with {e}")
                graphs[v][e] = export_with(v, e, Path(tmp) / e)
            paths = [graphs[v][e]["path"] for e in EXPORTERS] + [export_raw_dynamo(v, Path(tmp))]
            targets = [prepare(resolve_target(variant=v, onnx=p, threads=args.threads), CASES) for p in paths]
            log(f"time {v}: torchscript graph vs dynamo graph vs {RAW}")
            part, found = run_interleaved(targets, CASES, timing, rounds=args.rounds, percentiles=(90.0, 95.0, 99.0))
            report.results += part.results
            speedups += found

    data = report.to_dict()
    data["graphs"] = graphs
    data["speedups"] = [s.to_dict() for s in speedups]
    args.out.mkdir(parents=True, exist_ok=True)
    md = write_text(args.out / "exporters.md", markdown(report, graphs, speedups, args))
    js = write_text(args.out / "exporters.json", json.dumps(data, indent=2) + "\n")
    print(md.read_text())
    log(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
