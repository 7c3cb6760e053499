"""The INT8 CPU layout with 8-bit and 7-bit weights (onnxruntime's ``reduce_range``) against PyTorch FP32.

Why ``export --int8 --int8-layout cpu`` quantizes weights to 7 bits on a CPU without an INT8
dot-product unit: onnxruntime's u8s8 kernels there multiply uint8 activations by int8 weights
through ``VPMADDUBSW``, whose int16 pair sums saturate; with AVX512_VNNI / AVX_VNNI / AMX they
accumulate in int32 and do not. Both graphs are calibrated (MinMax) on the same crops of
scikit-image photographs, then run on onnxruntime on this CPU against PyTorch FP32 (synthetic
weights, as ``export`` without ``--weights``) on the validation grid and on held-out photographs.

    python benchmarks/int8_weight_bits.py                 # S, ~1 min on 2 cores
    python benchmarks/int8_weight_bits.py --variants s m
    python benchmarks/int8_weight_bits.py --calibration 2 --held-out 2 --out /tmp/bits   # quick check
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import common

from deploy.machine import machine_info, versions


def measure(variant: str, calibration: int, held_out: int = 16) -> list[dict[str, object]]:
    import onnx

    from convmlp import PRETRAINED_CFGS
    from convmlp.spec import io_spec
    from deploy.compare import INT8_TOLERANCE, compare_outputs
    from deploy.loader import reference_model
    from deploy.reference import DEFAULT_GRID, photo_cases, reference_cases
    from deploy.runners.onnxrt import OnnxRuntimeRunner
    from export.int8 import calibration_inputs, quantize_int8, vnni
    from export.onnx import export_onnx_proto
    from export.simplify import simplify
    from tests.photos import CALIBRATION_PHOTOS, HELD_OUT_PHOTOS, make_photo_set

    model = reference_model(variant)
    spec = io_spec(variant)
    graph, _ = simplify(export_onnx_proto(model, spec).proto, spec, "onnxslim")
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-bits-") as tmp:
        cal = make_photo_set(Path(tmp) / "cal", calibration, sources=CALIBRATION_PHOTOS, size=(256, 256))
        held = make_photo_set(Path(tmp) / "held", held_out, sources=HELD_OUT_PHOTOS, size=(256, 256))
        cases = reference_cases(model, DEFAULT_GRID) + photo_cases(model, held, PRETRAINED_CFGS[variant], native=False)
        for bits in (8, 7):
            copy = onnx.ModelProto()
            copy.CopyFrom(graph)
            inputs = calibration_inputs(cal, PRETRAINED_CFGS[variant])
            qdq, _ = quantize_int8(copy, inputs, layout="cpu", reduce_range=bits == 7)
            path = Path(tmp) / f"cpu{bits}.onnx"
            onnx.save(qdq, str(path))
            with OnnxRuntimeRunner(path, providers=["cpu"]) as runner:
                results = [compare_outputs(c.shape, c.outputs, runner.infer(c.inputs), INT8_TOLERANCE, photos=c.photos)
                           for c in cases]
            rel = [m.rel_l2 for r in results for m in r.outputs]
            cos = [m.cosine_min for r in results for m in r.outputs]
            rows.append({"variant": variant, "weight_bits": bits, "rel_l2_min": min(rel), "rel_l2_max": max(rel),
                         "cosine_min": min(cos), "passes_int8_gate": all(r.passed for r in results),
                         "vnni_here": vnni()})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__, first_line=True)
    common.add_variants(ap, ["s"])
    ap.add_argument("--calibration", type=int, default=8, help="calibration photographs")
    ap.add_argument("--held-out", type=int, default=16, help="held-out photographs in the comparison")
    common.add_out(ap, "int8_weight_bits.md", "int8_weight_bits.json")
    args = common.parse_args(ap, argv, counts=("calibration", "held_out"))
    lines = [common.machine_header(), "",
             "| variant | weights | rel L2 (grid + photos) | min cosine | INT8 gate | CPU has VNNI |",
             "| --- | --- | --- | --- | --- | --- |"]
    rows = []
    for v in args.variants:
        common.log(f"{v}: quantize with 8-bit and 7-bit weights")
        for r in measure(v, args.calibration, args.held_out):
            rows.append(r)
            lines.append(f"| {r['variant'].upper()} | {r['weight_bits']}-bit | {r['rel_l2_min']:.3f}-{r['rel_l2_max']:.3f} | "
                         f"{r['cosine_min']:.4f} | {'passes' if r['passes_int8_gate'] else 'fails'} | "
                         f"{'yes' if r['vnni_here'] else 'no'} |")
    common.write_results(args.out, "int8_weight_bits", "\n".join(lines),
                         {"machine": machine_info("cpu"), "versions": versions(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
