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

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from deploy.commands.bench import BenchReport, Case, prepare, resolve_target
from deploy.commands.bench.interleave import Speedup

CASES = (Case(1, 224, 224), Case(4, 320, 320))
EXPORTERS = ("torchscript", "dynamo")
RAW = "dynamo, no GELU rewrite"


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
        common.machine_header(),
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
    rows = common.by_case(report.results)  # run_interleaved appends each case's results in target order
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
    return "\n".join(out + common.all_cases(report))


def main(argv: list[str] | None = None) -> int:
    ap = common.interleaved_parser(__doc__, "exporters", CASES, duration_s=4.0, rounds=10, warmup_ms=500.0)
    args = common.parse_args(ap, argv)
    cases = tuple(args.cases)

    timing = common.timing_config(args)
    report = common.bench_report({"timing": timing.to_dict(), "threads": args.threads, "rounds": args.rounds,
                                  "cases": common.shapes(cases), "percentiles": list(common.PERCENTILES)})
    graphs: dict[str, dict[str, dict[str, Any]]] = {}
    speedups: list[Speedup] = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants:
            graphs[v] = {}
            for e in EXPORTERS:
                common.log(f"export {v} with {e}")
                graphs[v][e] = export_with(v, e, Path(tmp) / e)
            paths = [graphs[v][e]["path"] for e in EXPORTERS] + [export_raw_dynamo(v, Path(tmp))]
            targets = [prepare(resolve_target(variant=v, onnx=p, threads=args.threads), cases) for p in paths]
            common.time_interleaved(report, speedups, targets, cases, timing, args.rounds,
                                    f"{v}: torchscript graph vs dynamo graph vs {RAW}")

    return common.write_report(args.out, "exporters", markdown(report, graphs, speedups, args), report, speedups,
                               graphs=graphs)


if __name__ == "__main__":
    sys.exit(main())
