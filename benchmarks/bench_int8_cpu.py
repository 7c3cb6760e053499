"""INT8 on the CPU: the shipped Q/DQ graph and CPU-oriented quantization layouts against FP32, on
onnxruntime (interleaved), with their error against PyTorch FP32 on real photographs.

Graphs per variant, all from the FP32 graph ``export`` ships, calibrated (MinMax) on
crops of scikit-image photographs (``tests.photos.CALIBRATION_PHOTOS``):

- ``fp32``: the FP32 graph (the baseline);
- ``int8 (shipped)``: ``export --int8``: symmetric S8S8 Q/DQ + FP16 elsewhere, the
  TensorRT-shaped graph;
- ``qdq s8s8 fp32``: the same Q/DQ placement with the rest left FP32;
- ``int8 (cpu layout)``: ``export --int8 --int8-layout cpu``: asymmetric uint8
  activations (what onnxruntime recommends on x86), Q/DQ on outputs too, the rest FP32;
- ``qoperator u8s8``: onnxruntime's QOperator format (QLinearConv / QLinearMatMul).

Only the TensorRT-shaped graph obeys TensorRT's rules; the others answer what
onnxruntime on this CPU does best with INT8 (and why the TensorRT one is slow here). Accuracy: every graph against PyTorch
FP32 on held-out photographs (``tests.photos.HELD_OUT_PHOTOS``, disjoint from the
calibration photographs): rel L2, min cosine, top-1 agreement.

    python benchmarks/bench_int8_cpu.py --out results/                                         # ~15 min, 2 cores
    python benchmarks/bench_int8_cpu.py --variants s --duration-s 0.3 --rounds 2 --calibration 16 --out /tmp/i8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.commands.bench import BenchReport, Case, TimingConfig, machine_info, prepare, resolve_target, versions, write_text  # noqa: E402,I001
from deploy.commands.bench.interleave import Speedup, run_interleaved  # noqa: E402
from deploy.commands.bench.report import machine_line  # noqa: E402

CASES = (Case(1, 224, 224), Case(4, 320, 320))
LAYOUTS = ("fp32", "int8 (shipped)", "int8 (cpu layout)", "qdq s8s8 fp32", "qoperator u8s8")

_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _inputs(paths: list[Path], variant: str) -> list[np.ndarray]:
    from convmlp.preprocess import load_image, preprocess
    from convmlp.weights import PRETRAINED_CFGS

    return [preprocess(load_image(p), PRETRAINED_CFGS[variant]) for p in paths]


def _ort_quantize(src: Path, dst: Path, batches: list[np.ndarray], *, fmt: str, activations: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"input": x}

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(
        src, dst, Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        op_types_to_quantize=["Conv", "MatMul"], per_channel=True,
        activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8, nodes_to_exclude=["head/Gemm"],
        extra_options={"ActivationSymmetric": activations == "s8", "WeightSymmetric": True,
                       "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}},
    )
    return dst


def build_graphs(variant: str, folder: Path, calib: list[Path], held: list[Path]) -> dict[str, Path]:
    """Every layout's graph for ``variant`` (the shipped two through ``export``)."""
    from export.pipeline import ExportConfig, artifact_paths, run_export

    cal_dir = calib[0].parent
    for layout in ("tensorrt", "cpu"):
        result = run_export(ExportConfig(variant=variant, output_dir=folder / layout, int8=True, calibration=cal_dir,
                                         calibration_count=len(calib), int8_layout=layout))
        if not result.passed:
            raise SystemExit(f"export of {variant} ({layout}) failed validation: {'; '.join(result.failures)}")
    paths = artifact_paths(variant, folder / "tensorrt")
    batches = _inputs(calib, variant)
    graphs = {"fp32": paths["fp32"], "int8 (shipped)": paths["int8"],
              "int8 (cpu layout)": artifact_paths(variant, folder / "cpu")["int8"]}
    for name, fmt, act in (("qdq s8s8 fp32", "qdq", "s8"), ("qoperator u8s8", "qoperator", "u8")):
        graphs[name] = _ort_quantize(paths["fp32"], folder / f"{variant}.{fmt}.{act}.onnx", batches, fmt=fmt,
                                     activations=act)
    return graphs


def accuracy(variant: str, graphs: dict[str, Path], held: list[Path]) -> dict[str, dict[str, float]]:
    import onnxruntime as ort
    import torch

    from deploy.compare import Tolerance, compare_outputs
    from deploy.loader import reference_model

    x = np.concatenate(_inputs(held, variant))
    with torch.no_grad():
        ref = reference_model(variant)(torch.from_numpy(x)).numpy()
    out: dict[str, dict[str, float]] = {}
    for name, path in graphs.items():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        got = np.concatenate([sess.run(None, {"input": x[i:i + 16]})[0] for i in range(0, len(x), 16)])
        m = compare_outputs(x.shape, {"logits": ref}, {"logits": got}, Tolerance(name, 1.0, False)).outputs[0]
        out[name] = {"rel_l2": m.rel_l2, "cosine_min": m.cosine_min, "top1": m.top1 or 0.0, "top5": m.top5 or 0.0}
    return out


def markdown(report: BenchReport, speedups: list[Speedup], acc: dict[str, Any], args: Any) -> str:
    rows: dict[tuple[Any, ...], list[Any]] = {}
    for r in report.results:
        rows.setdefault((r.variant, r.batch, r.height, r.width), []).append(r)
    head = " | ".join(f"{n} ms" for n in LAYOUTS)
    out = [
        "## INT8 on the CPU: onnxruntime, interleaved",
        "",
        f"Machine: {machine_line(report.machine, report.versions)}",
        "",
        f"Threads: {args.threads}. {args.rounds} alternating rounds per case, {args.duration_s} s per graph per case. "
        f"Calibration: {args.calibration} crops of the calibration photographs (MinMax).",
        "",
        f"| variant | batch | resolution | {head} |",
        "|---|---:|---|" + "---:|" * len(LAYOUTS),
    ]
    by_case: dict[tuple[Any, ...], list[Speedup]] = {}
    for s in speedups:  # run_interleaved lists each case's speed-ups in target order
        by_case.setdefault((s.variant, s.case.batch, s.case.height, s.case.width), []).append(s)
    for key, results in rows.items():
        cells = []
        for i, r in enumerate(results):
            cell = f"{r.latency.median:.1f}"
            if i:
                sp = by_case[key][i - 1]
                cell += f" ({sp.median:.2f}x)"
            cells.append(cell)
        out.append(f"| {key[0]} | {key[1]} | {key[2]}x{key[3]} | " + " | ".join(cells) + " |")
    out += ["", "Speed-up in brackets: over the FP32 graph, median of the per-round ratios.", "",
            f"Error against PyTorch FP32 on {args.held_out} held-out photographs:", "",
            "| variant | graph | rel L2 | min cosine | top-1 agreement | top-5 overlap |", "|---|---|---:|---:|---:|---:|"]
    for v, by in acc.items():
        for name, m in by.items():
            out.append(f"| {v} | {name} | {m['rel_l2']:.4f} | {m['cosine_min']:.5f} | {m['top1']:.1%} | {m['top5']:.1%} |")
    out += ["", "All cases:", "", report.markdown_table(), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--warmup-ms", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=128, help="calibration images")
    ap.add_argument("--held-out", type=int, default=64, help="held-out photographs for the error table")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.duration_s <= 0 or args.threads < 1 or args.rounds < 1 or args.calibration < 1 or args.held_out < 1:
        ap.error("--duration-s must be > 0; --threads, --rounds, --calibration, --held-out >= 1")
    from tests.photos import CALIBRATION_PHOTOS, HELD_OUT_PHOTOS, make_photo_set

    timing = TimingConfig(warmup_s=args.warmup_ms / 1e3, duration_s=args.duration_s, min_iterations=args.rounds)
    report = BenchReport(machine=machine_info("cpu"), versions=versions(),
                         settings={"timing": timing.to_dict(), "threads": args.threads, "rounds": args.rounds,
                                   "layouts": list(LAYOUTS), "calibration": args.calibration,
                                   "percentiles": [90.0, 95.0, 99.0]})
    speedups: list[Speedup] = []
    acc: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        calib = make_photo_set(Path(tmp) / "calib", args.calibration, sources=CALIBRATION_PHOTOS, seed=0)
        held = make_photo_set(Path(tmp) / "held", args.held_out, sources=HELD_OUT_PHOTOS, seed=1)
        for v in args.variants:
            log(f"{v}: export and quantize")
            graphs = build_graphs(v, Path(tmp) / v, calib, held)
            acc[v] = accuracy(v, graphs, held)
            targets = [prepare(resolve_target(variant=v, onnx=graphs[n], threads=args.threads), CASES)
                       for n in LAYOUTS]
            log(f"{v}: time {', '.join(LAYOUTS)}")
            part, found = run_interleaved(targets, CASES, timing, rounds=args.rounds, percentiles=(90.0, 95.0, 99.0))
            report.results += part.results
            speedups += found  # per case, in LAYOUTS order after the FP32 baseline
    data = report.to_dict()
    data["accuracy"] = acc
    data["speedups"] = [s.to_dict() for s in speedups]
    args.out.mkdir(parents=True, exist_ok=True)
    md = write_text(args.out / "int8_cpu.md", markdown(report, speedups, acc, args))
    write_text(args.out / "int8_cpu.json", json.dumps(data, indent=2) + "\n")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
