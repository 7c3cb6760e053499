"""Layer by layer: where does a reduced-precision graph part from its FP32 graph? (``validate --per-layer``)

Like Polygraphy's ``--onnx-outputs mark all``: every floating-point tensor a node
produces is made a graph output, in the checked graph (FP16 / INT8 / BF16) and in
the FP32 graph it was made from, and both run on onnxruntime on the same input.
Tensors are matched by name: the FP16 converter and the Q/DQ quantizer keep the
names of the tensors the model's nodes produce and only add their own (Casts,
Quantize/DequantizeLinear), so every model tensor is matched, and the added ones
are left out. FP16 tensors are compared in float64 after a cast.

The first layer where the error *jumps* is the first tensor whose relative L2
error is both above the precision's floor and more than ``RATIO`` times the largest
error of the tensors its node reads (the graph input counts as exact): the error that
layer adds, not what it inherits. Measured on ConvMLP-S (synthetic weights, one
224x224 image): an FP16 graph's error grows smoothly from 5e-4 to 2e-3 through the
network, an INT8 graph's from 0.03 to 0.11; a layer whose weights were damaged
jumps from there to ~1 at that layer, and an INT8 MatMul whose input carries one
64x outlier channel from 0.035 at its input to 0.44 (while the tokenizer's error,
0.125 on that input, has faded: measured against every error before it, that jump
would hide). Floors: FP16 1e-2, BF16 5e-2, INT8 0.3 (about five times the largest
smooth error), RATIO 4.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DeployError
from .modelfile import ModelFacts
from .runners.onnxrt import NUMERICS_PASSES

__all__ = ["FLOORS", "RATIO", "LayerError", "LayerReport", "reference_graph", "compare_layers"]

FLOORS = {"fp16": 1e-2, "bf16": 5e-2, "int8": 0.3, "fp32": 1e-4}
RATIO = 4.0
_FLOAT_TYPES = (1, 10, 16)  # FLOAT, FLOAT16, BFLOAT16


@dataclass
class LayerError:
    """One matched tensor: the node that makes it in the FP32 graph and how far the checked graph is."""

    index: int
    tensor: str
    node: str
    op: str
    shape: list[int]
    rel_l2: float
    cosine: float
    max_abs: float


@dataclass
class LayerReport:
    checked: str
    reference: str
    precision: str
    input_shape: list[int]
    floor: float
    ratio: float
    layers: list[LayerError] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # FP32 tensors the checked graph has no twin of
    first_jump: LayerError | None = None
    largest_step: LayerError | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first_jump"] = asdict(self.first_jump) if self.first_jump else None
        d["largest_step"] = asdict(self.largest_step) if self.largest_step else None
        return d


def reference_graph(checked: ModelFacts) -> Path:
    """The FP32 graph ``checked`` was made from: ``convmlp_{variant}.onnx`` beside it (features:
    ``convmlp_{variant}.features.onnx``). ``DeployError`` (a missing file) when it is not there."""
    assert checked.path is not None
    if not checked.variant:
        raise DeployError(f"{checked.name} names no variant: give the FP32 graph with --reference-onnx")
    v = checked.variant
    name = f"convmlp_{v}.features.onnx" if checked.kind == "features" else f"convmlp_{v}.onnx"
    path = checked.path.parent / name
    if not path.is_file() or path.resolve() == checked.path.resolve():
        raise DeployError(f"no FP32 graph {name} beside {checked.name}: give it with --reference-onnx")
    return path


def _expose_all(path: Path) -> tuple[Any, list[tuple[str, str, str, tuple[str, ...]]]]:
    """The graph with every floating-point node output made a graph output; and those tensors in graph
    order as (tensor, node name, op, the node's inputs)."""
    import onnx

    proto = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(proto)
    typed = {v.name: v for v in inferred.graph.value_info}
    existing = {o.name for o in proto.graph.output}
    order = []
    for node in proto.graph.node:
        for out in node.output:
            if out in existing:
                order.append((out, node.name or node.op_type, node.op_type, tuple(node.input)))
                continue
            vi = typed.get(out)
            if vi is not None and vi.type.tensor_type.elem_type in _FLOAT_TYPES:
                proto.graph.output.append(vi)
                order.append((out, node.name or node.op_type, node.op_type, tuple(node.input)))
    return proto, order


def _run(proto: Any, x: np.ndarray, input_name: str) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(NUMERICS_PASSES))
        values = sess.run(None, {input_name: x})
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DeployError(f"onnxruntime cannot run the graph with its tensors exposed: {first}") from None
    return {o.name: v for o, v in zip(sess.get_outputs(), values, strict=True)}


def compare_layers(
    checked: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    x: np.ndarray,
    *,
    precision: str = "fp16",
    floor: float | None = None,
    ratio: float = RATIO,
) -> LayerReport:
    """Every tensor of ``reference`` (FP32) that ``checked`` also computes, compared on input ``x``."""
    checked, reference = Path(checked), Path(reference)
    ref_proto, order = _expose_all(reference)
    chk_proto, chk_order = _expose_all(checked)
    input_name = ref_proto.graph.input[0].name
    ref_out = _run(ref_proto, x, input_name)
    chk_out = _run(chk_proto, x, chk_proto.graph.input[0].name)
    report = LayerReport(str(checked), str(reference), precision, list(x.shape),
                         FLOORS.get(precision, FLOORS["fp16"]) if floor is None else floor, ratio)
    errors: dict[str, float] = {}  # tensor -> its rel L2
    best_step = 0.0
    for tensor, node, op, inputs in order:
        a, b = ref_out.get(tensor), chk_out.get(tensor)
        if a is None or b is None or a.shape != b.shape:
            report.unmatched.append(tensor)
            continue
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        norm = float(np.linalg.norm(a64))
        diff = float(np.linalg.norm(b64 - a64))
        rel = diff / norm if norm > 0 else diff
        denom = norm * float(np.linalg.norm(b64))
        cos = float(a64 @ b64 / denom) if denom > 0 else 1.0
        err = LayerError(len(report.layers), tensor, node, op, list(a.shape), rel, cos,
                         float(np.abs(b64 - a64).max()) if a64.size else 0.0)
        if not np.isfinite(b64).all():
            err.rel_l2, err.cosine = float("inf"), 0.0
        report.layers.append(err)
        before = max((errors[i] for i in inputs if i in errors), default=0.0)  # what the node was given
        step = err.rel_l2 / before if before > 0 else (float("inf") if err.rel_l2 > 0 else 0.0)
        if report.first_jump is None and err.rel_l2 > report.floor and err.rel_l2 > ratio * before:
            report.first_jump = err
        if before > 0 and step > best_step:
            best_step, report.largest_step = step, err
        errors[tensor] = err.rel_l2
    if not report.layers:
        raise DeployError(f"no tensor of {reference.name} is found in {checked.name}: are they the same model?")
    return report
