"""Reproduction for an upstream report: onnxruntime's ``WeightBiasQuantization`` pass changes what a
TensorRT-layout INT8 Q/DQ graph computes.

The pass rewrites the float bias of a Conv/Gemm fed by DequantizeLinear into INT32 with
scale = input scale x weight scale. In an INT8+FP16 graph (FP16 scales, as TensorRT's strongly typed
builds take them) that product is formed in FP16 and can fall below FP16's smallest normal number
(6.1e-5), so ``round(bias / scale)`` overflows; TensorRT keeps biases in floating point and never does
this. The script builds ConvMLP checkpoints with the official initialisation and BatchNorm statistics
drawn from ranges (mean U[-0.2, 0.2], var and weight U[0.5, 1.5]), exports the TensorRT-layout INT8
graph calibrated on smooth colour fields, and runs it on onnxruntime with its default optimisations,
with ``WeightBiasQuantization`` disabled, and with every optimisation off (``ORT_DISABLE_ALL``),
against PyTorch FP32. With ``--graphs`` it also compares the three on already exported graphs.

    python benchmarks/ort_weight_bias_quantization.py --seeds 0 1 2 3       # ~2 min on 2 cores
    python benchmarks/ort_weight_bias_quantization.py --graphs artifacts/convmlp_s.int8.onnx
    python benchmarks/ort_weight_bias_quantization.py --seeds 0 --images 2 --out /tmp/wbq   # quick check
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import common
import numpy as np

PASS = "WeightBiasQuantization"


def checkpoint(variant: str, seed: int, path: Path) -> Path:
    import torch

    from convmlp import create_model

    model = create_model(variant)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
    torch.save(model.state_dict(), path)
    return path


def colour_fields(folder: Path, count: int, seed: int) -> Path:
    """Smooth images: a linear blend between two random colours, horizontal or vertical."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    for i in range(count):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx if i % 2 else yy)[..., None]
        Image.fromarray((a * (1 - t) + b * t).astype(np.uint8)).save(folder / f"field_{i:02d}.png")
    return folder


def errors(graph: Path, variant: str, weights: Path | None) -> dict[str, float]:
    """rel L2 against PyTorch FP32 on the validation grid, per onnxruntime configuration; and how far the
    configurations are from each other (the largest rel L2 between their outputs)."""
    import onnxruntime as ort
    import torch

    from deploy.loader import reference_model
    from deploy.reference import DEFAULT_GRID, sample_images

    model = reference_model(variant, weights)
    xs = [sample_images(s, i) for i, s in enumerate(DEFAULT_GRID)]
    with torch.no_grad():
        refs = [model(torch.from_numpy(x)).numpy() for x in xs]
    out: dict[str, float] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    for name, level, disabled in (("default", None, []), (f"without {PASS}", None, [PASS]),
                                  ("ORT_DISABLE_ALL", ort.GraphOptimizationLevel.ORT_DISABLE_ALL, [])):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if level is not None:
            so.graph_optimization_level = level
        sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        ys = [sess.run(None, {"input": x})[0] for x in xs]
        outputs[name] = ys
        out[name] = max(float(np.linalg.norm(y - r) / np.linalg.norm(r)) for y, r in zip(ys, refs, strict=True))

    def apart(a: str, b: str) -> float:
        return max(float(np.linalg.norm(u - v) / np.linalg.norm(v)) for u, v in zip(outputs[a], outputs[b], strict=True))

    names = list(outputs)
    out["default vs without"] = apart(names[0], names[1])
    out["without vs DISABLE_ALL"] = apart(names[1], names[2])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__, first_line=True)
    common.add_variants(ap, ["s"], one=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--graphs", nargs="*", default=[], help="exported graphs to compare instead (synthetic weights)")
    common.add_out(ap, "ort_weight_bias_quantization.md", "ort_weight_bias_quantization.json")
    args = common.parse_args(ap, argv, counts=("images",))

    from click.testing import CliRunner

    import cli
    from deploy.machine import machine_info, versions
    from deploy.modelfile import describe

    lines = [common.machine_header(), "",
             f"| model | default | without {PASS} | ORT_DISABLE_ALL | default vs without | without vs DISABLE_ALL |",
             "| --- | --- | --- | --- | --- | --- |"]
    rows: list[dict[str, object]] = []

    def row(name: str, e: dict[str, float]) -> None:
        rows.append({"model": name, **e})
        lines.append(f"| {name} | {' | '.join(f'{v:.3g}' for v in e.values())} |")

    for g in args.graphs:
        row(Path(g).name, errors(Path(g), describe(g).variant or args.variant, None))
    if not args.graphs:
        with tempfile.TemporaryDirectory(prefix="ort-wbq-") as tmp:
            fields = colour_fields(Path(tmp) / "fields", args.images, 0)
            for seed in args.seeds:
                common.log(f"seed {seed}: export INT8 and compare")
                ck = checkpoint(args.variant, seed, Path(tmp) / f"ck{seed}.pth")
                out = Path(tmp) / f"out{seed}"
                res = CliRunner().invoke(cli.main, ["export", "-v", args.variant, "--weights", str(ck), "--int8",
                                                    "--calibration", str(fields), "--calibration-count",
                                                    str(args.images), "-o", str(out), "--json"])
                graph = out / f"convmlp_{args.variant}.int8.onnx"
                if not graph.exists():  # the gate refused it
                    rows.append({"model": f"seed {seed}", "export_exit": res.exit_code})
                    lines.append(f"| seed {seed} | export exit {res.exit_code} | | | | |")
                    continue
                row(f"seed {seed} INT8 (TensorRT layout)", errors(graph, args.variant, ck))
    common.write_results(args.out, "ort_weight_bias_quantization", "\n".join(lines),
                         {"machine": machine_info("cpu"), "versions": versions(), "variant": args.variant,
                          "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
