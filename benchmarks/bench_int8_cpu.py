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

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import numpy as np

from deploy.commands.bench import BenchReport, Case, prepare, resolve_target
from deploy.commands.bench.interleave import Speedup

CASES = (Case(1, 224, 224), Case(4, 320, 320))
LAYOUTS = ("fp32", "int8 (shipped)", "int8 (cpu layout)", "qdq s8s8 fp32", "qoperator u8s8")


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
    import onnx

    from export.onnx import set_metadata

    graph = onnx.load(str(dst))  # the FP32 graph's metadata came along: it computes in int8 now
    set_metadata(graph, {"precision": "int8"})
    onnx.save(graph, str(dst))
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
    rows = common.by_case(report.results)
    head = " | ".join(f"{n} ms" for n in LAYOUTS)
    out = [
        "## INT8 on the CPU: onnxruntime, interleaved",
        "",
        common.machine_header(),
        "",
        f"Threads: {args.threads}. {args.rounds} alternating rounds per case, {args.duration_s} s per graph per case. "
        f"Calibration: {args.calibration} crops of the calibration photographs (MinMax).",
        "",
        f"| variant | batch | resolution | {head} |",
        "|---|---:|---|" + "---:|" * len(LAYOUTS),
    ]
    by_case = common.by_case(speedups)  # run_interleaved lists each case's speed-ups in target order
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
            *common.error_table(acc, "graph")]
    return "\n".join(out + common.all_cases(report))


def main(argv: list[str] | None = None) -> int:
    ap = common.interleaved_parser(__doc__, "int8_cpu", CASES, duration_s=3.0, rounds=8, warmup_ms=300.0)
    ap.add_argument("--calibration", type=int, default=128, help="calibration images")
    ap.add_argument("--held-out", type=int, default=64, help="held-out photographs for the error table")
    args = common.parse_args(ap, argv, counts=("calibration", "held_out"))
    cases = args.cases

    speedups: list[Speedup] = []  # per case, in LAYOUTS order after the FP32 baseline
    acc: dict[str, Any] = {}  # per variant: each graph's error against PyTorch FP32
    timing = common.timing_config(args)
    report = common.interleaved_report(args, timing, layouts=list(LAYOUTS), calibration=args.calibration)
    with tempfile.TemporaryDirectory() as tmp:
        calib, held = common.photo_sets(Path(tmp), args.calibration, args.held_out)
        for v in args.variants:
            common.log(f"{v}: export and quantize")
            graphs = build_graphs(v, Path(tmp) / v, calib, held)
            acc[v] = accuracy(v, graphs, held)
            targets = [prepare(resolve_target(variant=v, onnx=graphs[n], threads=args.threads), cases)
                       for n in LAYOUTS]
            common.time_interleaved(report, speedups, targets, cases, timing, args.rounds, f"{v}: {', '.join(LAYOUTS)}")
    return common.write_report(args.out, "int8_cpu", markdown(report, speedups, acc, args), report, speedups,
                               accuracy=acc)


if __name__ == "__main__":
    sys.exit(main())
