"""Every CPU path side by side, interleaved: PyTorch eager, onnxruntime FP32 and INT8, OpenVINO FP32,
BF16 and INT8, on ConvMLP S/M/L, with the machine's measured FP32 and BF16 matmul peaks, and each
path's error against PyTorch FP32 on real photographs.

Targets per variant (all from the graphs ``convmlp-deploy export`` ships):

- ``torch``: PyTorch eager FP32;
- ``ort fp32``: onnxruntime on the FP32 graph;
- ``ort int8``: onnxruntime on ``export --int8 --int8-layout cpu``;
- ``ov f32`` / ``ov bf16``: OpenVINO on the FP32 graph, precision hint f32 / bf16;
- ``ov int8``: OpenVINO on the same INT8 graph (INT8 layers, the rest in OpenVINO's default).

On a CPU without native BF16 (an AVX2-only EPYC) ``ov bf16`` and the BF16 peak are left out: OpenVINO
refuses the hint there (``--precision bf16``), and an emulated BF16 matmul is no roofline.

TFLOP/s are 2 x MACs x images/s (INT8 paths: the same MACs, done as integer ops);
"% peak" is against the measured matmul peak of the precision the path computes in
(FP32 for torch/ort fp32/ov f32, BF16 for ov bf16; no INT8 roofline is measured, so
INT8 rows show none). Peaks: 2048^3 matmuls (FP32: torch and onnxruntime, the
better; BF16: torch and OpenVINO, the better).

    python benchmarks/bench_cpu_backends.py --out results/                                      # ~15 min
    python benchmarks/bench_cpu_backends.py --variants s --cases 1x224 --duration-s 0.3 --rounds 2 --calibration 16 --out /tmp/c
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import numpy as np
from bench_cpu import PEAK_N, _best_tflops, measure_cpu_peak

from deploy.commands.bench import BenchReport, Case, prepare, resolve_target
from deploy.commands.bench.interleave import Speedup

TARGETS = ("torch", "ort fp32", "ort int8", "ov f32", "ov bf16", "ov int8")
CASES = (Case(1, 224, 224), Case(4, 320, 320), Case(1, 512, 512))


def targets_here() -> tuple[str, ...]:
    """``TARGETS`` less ``ov bf16`` where this CPU has no native BF16."""
    from deploy.machine import cpu_features

    return TARGETS if cpu_features()["bf16"] else tuple(t for t in TARGETS if t != "ov bf16")



def measure_bf16_peak(threads: int, n: int = PEAK_N) -> dict[str, float]:
    """BF16 TFLOP/s of an ``n x n x n`` matmul in PyTorch (oneDNN) and OpenVINO (bf16 hint); none where
    the CPU has no native BF16."""
    import torch

    from deploy.machine import cpu_features

    if not cpu_features()["bf16"]:
        return {}

    flops = 2.0 * n**3
    out: dict[str, float] = {}
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
        out["torch"] = _best_tflops(lambda: torch.mm(a, b), flops)
    finally:
        torch.set_num_threads(old)
    try:
        import openvino as ov
        import openvino.runtime.opset13 as ops  # type: ignore[import-not-found]
    except ImportError:
        try:
            import openvino as ov
            import openvino.opset13 as ops  # type: ignore[no-redef]
        except ImportError:
            return out
    x = ops.parameter([n, n], ov.Type.f32)
    w = ops.constant(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    model = ov.Model([ops.matmul(x, w, False, False)], [x])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                      "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    xin = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    out["openvino"] = _best_tflops(lambda: req.infer({0: xin}), flops)
    return out


def export_graphs(variant: str, folder: Path, calib_dir: Path, count: int) -> dict[str, Path]:
    from export.pipeline import ExportConfig, artifact_paths, run_export

    result = run_export(ExportConfig(variant=variant, output_dir=folder, int8=True, calibration=calib_dir,
                                     calibration_count=count, int8_layout="cpu"))
    if not result.passed:
        raise SystemExit(f"export of {variant} failed validation: {'; '.join(result.failures)}")
    paths = artifact_paths(variant, folder)
    return {"fp32": paths["fp32"], "int8": paths["int8"]}


def targets_for(variant: str, graphs: dict[str, Path], threads: int) -> list[Any]:
    spec = {
        "torch": dict(variant=variant, backend="torch"),
        "ort fp32": dict(onnx=graphs["fp32"]),
        "ort int8": dict(onnx=graphs["int8"]),
        "ov f32": dict(onnx=graphs["fp32"], backend="openvino", precision="f32"),
        "ov bf16": dict(onnx=graphs["fp32"], backend="openvino", precision="bf16"),
        "ov int8": dict(onnx=graphs["int8"], backend="openvino", precision="auto"),
    }
    return [resolve_target(threads=threads, **spec[t]) for t in targets_here()]


def accuracy(variant: str, graphs: dict[str, Path], photos: list[Path], threads: int) -> dict[str, dict[str, float]]:
    """Each path's logits against PyTorch FP32 on the photographs."""
    import torch

    from convmlp.preprocess import load_image, preprocess
    from deploy.commands.bench.targets import open_runners
    from deploy.compare import Tolerance, compare_outputs
    from deploy.loader import reference_model

    x = np.concatenate([preprocess(load_image(p), variant) for p in photos])
    with torch.no_grad():
        ref = reference_model(variant)(torch.from_numpy(x)).numpy()
    out: dict[str, dict[str, float]] = {}
    for name, target in zip(targets_here(), targets_for(variant, graphs, threads), strict=True):
        if name == "torch":
            continue
        with open_runners(target) as (runner, *_):
            got = np.concatenate([runner.infer(x[i:i + 16])["logits"] for i in range(0, len(x), 16)])
        m = compare_outputs(x.shape, {"logits": ref}, {"logits": got}, Tolerance(name, 1.0, False)).outputs[0]
        out[name] = {"rel_l2": m.rel_l2, "cosine_min": m.cosine_min, "top1": m.top1 or 0.0, "top5": m.top5 or 0.0}
    return out


def markdown(report: BenchReport, speedups: list[Speedup], acc: dict[str, Any], peaks: dict[str, Any],
             args: Any) -> str:
    fp32_peak, bf16_peak = max(peaks["fp32"].values()), max(peaks["bf16"].values() or [0.0])
    rows, sp = common.by_case(report.results), common.by_case(speedups)
    out = [
        "## CPU backends side by side (interleaved)",
        "",
        common.machine_header(),
        "",
        f"Threads: {args.threads} for every path. {args.rounds} alternating rounds per case, {args.duration_s} s "
        f"per path per case. Matmul peaks ({args.peak_n}^3): FP32 "
        + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in peaks["fp32"].items()) + " GFLOP/s; BF16 "
        + (", ".join(f"{k} {v * 1e3:.0f}" for k, v in peaks["bf16"].items()) or "not measured") + " GFLOP/s.",
        "",
        "| variant | batch | resolution | path | precision run | median ms | images/s | TFLOP/s | % of its peak "
        "| speed-up over torch (range) |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---|",
    ]
    for key, results in rows.items():
        for i, (name, r) in enumerate(zip(targets_here(), results, strict=True)):
            peak = bf16_peak if name == "ov bf16" else fp32_peak
            pct = f"{100 * (r.tflops or 0) / peak:.0f}%" if peak and "int8" not in name else "-"
            speed = "1" if i == 0 else f"**{sp[key][i - 1].median:.2f}x** ({sp[key][i - 1].low:.2f}-{sp[key][i - 1].high:.2f})"
            out.append(f"| {key[0]} | {key[1]} | {key[2]}x{key[3]} | {name} | {r.precision} | {r.latency.median:.1f} "
                       f"| {r.images_per_s:.1f} | {r.tflops or 0:.3f} | {pct} | {speed} |")
    out += ["", f"Error against PyTorch FP32 on {args.photos} real photographs (held-out scikit-image photos; "
            "INT8 calibrated on the other photographs):", "", *common.error_table(acc, "path")]
    return "\n".join(out + common.all_cases(report))


def main(argv: list[str] | None = None) -> int:
    ap = common.interleaved_parser(__doc__, "cpu_backends", CASES, duration_s=2.0, rounds=6, warmup_ms=300.0)
    common.add_peak(ap, PEAK_N)
    ap.add_argument("--calibration", type=int, default=128)
    ap.add_argument("--photos", type=int, default=64)
    args = common.parse_args(ap, argv, counts=("calibration", "photos"))
    cases = args.cases

    peaks = {"fp32": measure_cpu_peak(args.threads, args.peak_n), "bf16": measure_bf16_peak(args.threads, args.peak_n)}
    common.log(f"peaks (TFLOP/s): {peaks}")
    timing = common.timing_config(args)
    report = common.interleaved_report(args, timing, targets=list(targets_here()), peaks_tflops=peaks)
    speedups: list[Speedup] = []
    acc: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        calib, photos = common.photo_sets(Path(tmp), args.calibration, args.photos)
        for v in args.variants:
            common.log(f"{v}: export FP32 + INT8 (cpu layout)")
            graphs = export_graphs(v, Path(tmp) / v, calib[0].parent, args.calibration)
            acc[v] = accuracy(v, graphs, photos, args.threads)
            targets = [prepare(t, cases) for t in targets_for(v, graphs, args.threads)]
            common.time_interleaved(report, speedups, targets, cases, timing, args.rounds,
                                    f"{v}: {', '.join(targets_here())}")
    return common.write_report(args.out, "cpu_backends", markdown(report, speedups, acc, peaks, args), report,
                               speedups, accuracy=acc)


if __name__ == "__main__":
    sys.exit(main())
