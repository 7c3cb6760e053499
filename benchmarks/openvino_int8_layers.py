"""Where OpenVINO's CPU time goes for ConvMLP in each precision: the per-node profile (``PERF_COUNT``,
the code behind ``benchmark --backend openvino --per-layer``) of the FP32 graph at FP32 (and BF16 where
the CPU has it) and of both INT8 layouts ``export --int8`` writes, grouped into what explains an INT8
graph that is no faster than BF16:

- ``INT8 compute``: convolutions and MatMuls whose kernel runs in INT8 (exec type ``*_I8``/``*_U8``);
- ``float compute``: convolutions and MatMuls that still run in float (not quantized, or not fused);
- ``reorders``: layout changes between kernels (``Reorder``, ``Transpose``) that a fused graph avoids;
- ``conversions``: precision conversions (``Convert``, and ``FakeQuantize`` nodes OpenVINO could not fold
  into a kernel: Q/DQ pairs that run as separate element-wise ops);
- ``element-wise and norms``: additions (a float bias OpenVINO did not fuse), zero-point subtractions,
  GELU, LayerNorm (``MVN``, or ``ReduceMean`` + ``RMS``), pooling and the fused ``Subgraph`` kernels
  OpenVINO builds from them (``Subgraph`` with an ``I8`` kernel: element-wise work fused with a
  requantization);
- everything else under its node type.

It also prints the per-op-type table (node type and kernel) for each graph, so the RESULTS.md
explanation can be checked against the profile.

    python benchmarks/openvino_int8_layers.py --out results/                  # S at 1x224, ~1.5 min
    python benchmarks/openvino_int8_layers.py --variants s l --batch 4 --size 320 --out /tmp/ovl
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import common

from deploy.commands.bench.layer_times import LayerProfile, profile_openvino

COMPUTE = {"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "FullyConnectedQuantizedLegacy",
           "FullyConnectedQuantized", "Deconvolution"}
REORDERS = {"Reorder", "Transpose"}
CONVERSIONS = {"Convert", "FakeQuantize"}
ELEMENTWISE = {"Eltwise", "Subgraph", "MVN", "RMS", "Multiply", "Add", "Subtract", "Gelu", "Pooling", "MaxPool",
               "AvgPool", "ReduceMean", "Softmax", "Normalize", "Interpolate", "Math"}
GROUPS = ("INT8 compute", "float compute", "reorders", "conversions", "element-wise and norms", "other")


def int8_kernel(exec_type: str) -> bool:
    """Whether OpenVINO's kernel name says it computes in 8-bit integers (``jit_avx2_I8``, ``brgemm_avx512_amx_U8``)."""
    tail = exec_type.upper().rsplit("_", 1)[-1]
    return tail in ("I8", "U8")


def group(op: str, exec_type: str) -> str:
    if op in COMPUTE:
        return "INT8 compute" if int8_kernel(exec_type) else "float compute"
    if op in REORDERS:
        return "reorders"
    if op in CONVERSIONS:
        return "conversions"
    if op in ELEMENTWISE:
        return "element-wise and norms"
    return "other"


def summarize(profile: LayerProfile) -> dict[str, Any]:
    groups: dict[str, list[float]] = {g: [0.0, 0] for g in GROUPS}
    kernels: dict[tuple[str, str], list[float]] = {}
    for t in profile.layers:
        g = groups[group(t.op, t.exec_type)]
        g[0] += t.ms
        g[1] += 1
        k = kernels.setdefault((t.op, t.exec_type), [0.0, 0])
        k[0] += t.ms
        k[1] += 1
    total = profile.total_ms
    return {
        "backend": profile.backend,
        "runs": profile.runs,
        "total_ms": total,
        "nodes": len(profile.layers),
        "groups": {g: {"ms": ms, "pct": 100 * ms / total, "nodes": int(n)} for g, (ms, n) in groups.items()},
        "kernels": sorted(({"op": op, "exec_type": ex, "ms": ms, "pct": 100 * ms / total, "nodes": int(n)}
                           for (op, ex), (ms, n) in kernels.items()), key=lambda r: -r["ms"]),
    }


def export_graphs(variant: str, folder: Path, calibration: int) -> dict[str, Path]:
    """The FP32 graph and both INT8 layouts, as ``export --int8`` writes them (calibrated on photographs)."""
    from export.pipeline import ExportConfig, artifact_paths, run_export
    from tests.photos import CALIBRATION_PHOTOS, make_photo_set

    calib = make_photo_set(folder / "calib", calibration, sources=CALIBRATION_PHOTOS, seed=0)[0].parent
    graphs: dict[str, Path] = {}
    for layout in ("tensorrt", "cpu"):
        out = folder / layout
        result = run_export(ExportConfig(variant=variant, output_dir=out, int8=True, calibration=calib,
                                         calibration_count=calibration, int8_layout=layout))
        if not result.passed:
            raise SystemExit(f"export of {variant} ({layout}) failed: {'; '.join(result.failures)}")
        paths = artifact_paths(variant, out)
        graphs.setdefault("fp32", paths["fp32"])
        graphs[f"int8 {layout} layout"] = paths["int8"]
    return graphs


def markdown(results: dict[str, dict[str, Any]], shape: tuple[int, ...], args: Any) -> str:
    lines = [
        f"## OpenVINO CPU time per kind of work, batch {shape[0]} x {shape[2]}x{shape[3]} "
        "(`openvino_int8_layers.py`)",
        "",
        common.machine_header(),
        "",
        f"{args.threads} inference threads, {args.runs} profiled runs after one warm-up, per-shape compile, "
        "no model cache. ms = OpenVINO's per-node real time per run (PERF_COUNT), summed.",
        "",
        "| variant | graph [precision run] | ms per run | nodes | " + " | ".join(GROUPS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(GROUPS),
    ]
    for key, r in results.items():
        variant, graph = key.split(" ", 1)
        cells = [f"{r['groups'][g]['ms']:.2f} ({r['groups'][g]['pct']:.0f}%, {r['groups'][g]['nodes']})"
                 for g in GROUPS]
        lines.append(f"| {variant.upper()} | {graph} [{r['backend']}] | {r['total_ms']:.2f} | {r['nodes']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Cells: ms (share of the run, nodes). The kernels, per graph (top 10 by time):", ""]
    for key, r in results.items():
        lines += [f"**{key}** ({r['backend']}, {r['total_ms']:.2f} ms per run)", "",
                  "| node type | exec type | ms | % | nodes |", "|---|---|---:|---:|---:|"]
        lines += [f"| {k['op']} | {k['exec_type']} | {k['ms']:.2f} | {k['pct']:.1f} | {k['nodes']} |"
                  for k in r["kernels"][:10]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    common.add_variants(ap, ["s"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224, help="square input side")
    ap.add_argument("--threads", type=int, default=2, help="inference threads")
    ap.add_argument("--runs", type=int, default=30, help="profiled runs (after one warm-up run)")
    ap.add_argument("--calibration", type=int, default=64, help="calibration photographs for the INT8 graphs")
    common.add_out(ap, "openvino_int8_layers.md", "openvino_int8_layers.json")
    args = common.parse_args(ap, argv, counts=("batch", "runs", "calibration"))
    if args.size < 32:
        ap.error("--size must be >= 32")
    from deploy.machine import cpu_features, machine_info, versions

    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()["flags"]))
    shape = (args.batch, 3, args.size, args.size)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants:
            common.log(f"{v}: export FP32 and both INT8 layouts")
            graphs = export_graphs(v, Path(tmp) / v, args.calibration)
            runs = [("fp32", "f32")] + ([("fp32", "bf16")] if bf16 else []) + [
                (g, "auto") for g in graphs if g.startswith("int8")]
            for graph, precision in runs:
                common.log(f"{v}: profile {graph} at {precision}")
                profile = profile_openvino(graphs[graph], shape, precision=precision, threads=args.threads,
                                           runs=args.runs)
                results[f"{v} {graph}" + (f" as {precision}" if graph == "fp32" else "")] = summarize(profile)
    text = markdown(results, shape, args)
    if not bf16:
        text += ("\nThis CPU has no BF16 (neither AVX512_BF16 nor AMX), so no BF16 row; the INT8 graphs run "
                 "in INT8 where OpenVINO's kernels allow and in FP32 elsewhere.\n")
    common.write_results(args.out, "openvino_int8_layers", text,
                         {"machine": machine_info("cpu"), "versions": versions(), "shape": list(shape),
                          "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
