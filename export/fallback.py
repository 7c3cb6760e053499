"""Accuracy-driven mixed precision: when the INT8 graph fails its gate, move the layers that cost the most
back to floating point until it passes (``export --int8-fallback auto``).

The search, after NNCF's ``quantize_with_accuracy_control``:

1. **Rank by reverting** (``rank``): each quantized Conv/MatMul in turn is moved back to float alone
   (``revert``) and the graph is run on the ranking images (held-out images, else calibration
   images); a layer's cost is how much of the logits' error (rel L2 against PyTorch FP32) that one
   revert removes. This measures what each layer does to the *output*. Ranking by the per-layer error
   table (``deploy.layer_errors``) would be one run instead of one per layer, but that error is
   cumulative: every layer after a bad one inherits its error, so the table says where the error
   shows, not which layer's quantization caused it; reverting measures the cause. On ConvMLP-S (52
   quantized layers) the ranking costs about one onnxruntime session and one small batch per layer.
2. **Revert greedily** (``search``): the costliest layer first, one more each step. A step whose
   ranking-image error meets the gate's rel L2 and cosine bounds is checked with the full gate (the
   export's validation cases and held-out images); the first that passes is the answer. Past ``limit``
   layers (default: a quarter of the quantized ones) the search gives up and the export exits 3 with
   the table of what it tried.

A reverted layer takes its input before the activation's QuantizeLinear and its weight (and, in the
CPU layout, its bias) from the FP32 graph the INT8 one was made from, in the float type the layout
dequantizes to: FP16 in the TensorRT layout (INT8+FP16, what TensorRT runs), FP32 in the CPU layout.
The Q/DQ nodes and INT8 weights nothing reads any more are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from deploy.compare import Tolerance, ValidationReport
from deploy.errors import one_line

from .errors import ExportError
from .int8 import QUANTIZED_OPS

__all__ = ["MODES", "quantized_layers", "revert", "LayerCost", "Step", "FallbackResult", "rank", "search",
           "default_limit", "logits_error"]

#: ``auto``: search when the INT8 gate fails; ``off``: a failed gate writes nothing
MODES = ("auto", "off")


def quantized_layers(proto: onnx.ModelProto) -> list[str]:
    """Names of the Conv/MatMul nodes whose weight is a dequantized INT8 initializer, in graph order."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name for i in proto.graph.initializer}
    names = []
    for n in proto.graph.node:
        if n.op_type not in QUANTIZED_OPS or len(n.input) < 2:
            continue
        dq = producers.get(n.input[1])
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            names.append(n.name)
    return names


def revert(quantized: onnx.ModelProto, reference: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``quantized`` with the layers ``names`` back in floating point (see the module text);
    ``reference``: the FP32 graph it was quantized from. ``ExportError`` for a layer it cannot revert."""
    graph = onnx.ModelProto()
    graph.CopyFrom(quantized)
    producers = {o: n for n in graph.graph.node for o in n.output}
    inits = {i.name: i for i in graph.graph.initializer}
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {i.name: i for i in reference.graph.initializer}
    nodes = {n.name: n for n in graph.graph.node}
    for name in names:
        node, ref = nodes.get(name), ref_nodes.get(name)
        if node is None or ref is None or node.op_type not in QUANTIZED_OPS:
            raise ExportError(f"cannot move {name} back to float: no such quantized layer in both graphs")
        for slot in range(len(node.input)):
            dq = producers.get(node.input[slot])
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:  # a dequantized initializer (weight, CPU-layout INT32 bias): the FP32 one
                if slot >= len(ref.input) or ref.input[slot] not in ref_inits:
                    raise ExportError(f"cannot move {name} back to float: the FP32 graph has no initializer "
                                      f"for its input {slot}")
                dtype = _float_type(inits.get(dq.input[1]))
                value = numpy_helper.to_array(ref_inits[ref.input[slot]]).astype(dtype)
                new = f"{name}/float_input_{slot}"
                graph.graph.initializer.append(numpy_helper.from_array(value, new))
                node.input[slot] = new
            else:  # an activation: the tensor before its QuantizeLinear
                q = producers.get(dq.input[0])
                if q is None or q.op_type != "QuantizeLinear":
                    raise ExportError(f"cannot move {name} back to float: its input {slot} is dequantized from "
                                      "no QuantizeLinear")
                node.input[slot] = q.input[0]
    _drop_dead(graph)
    return graph


def _float_type(scale: onnx.TensorProto | None) -> np.dtype:
    """The float type a DequantizeLinear gives: its scale's (FP16 in the TensorRT layout)."""
    if scale is not None and scale.data_type == onnx.TensorProto.FLOAT16:
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def _drop_dead(proto: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is read (by a node or as a graph output), then unread initializers."""
    live = {o.name for o in proto.graph.output}
    kept = []
    for node in reversed(proto.graph.node):
        if any(o in live for o in node.output):
            kept.append(node)
            live.update(i for i in node.input if i)
    kept.reverse()
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    unread = [i for i in proto.graph.initializer if i.name not in live]
    for init in unread:
        proto.graph.initializer.remove(init)


# --------------------------------------------------------------------------- measuring


def logits_error(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(rel L2, smallest per-sample cosine, top-1 agreement) of ``out`` against ``ref`` (N x classes)."""
    a, b = ref.astype(np.float64), out.astype(np.float64)
    norm = float(np.linalg.norm(a))
    rel = float(np.linalg.norm(b - a)) / norm if norm > 0 else float(np.linalg.norm(b - a))
    if not np.isfinite(b).all():
        return float("inf"), 0.0, 0.0
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return rel, float(cos.min()), float((a.argmax(1) == b.argmax(1)).mean())


def _session_logits(proto: onnx.ModelProto, x: np.ndarray, threads: int | None) -> np.ndarray:
    """The first output of ``proto`` on onnxruntime's CPU provider, WeightBiasQuantization off (as the gate)."""
    import onnxruntime as ort

    from deploy.runners.onnxrt import NUMERICS_PASSES

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(NUMERICS_PASSES))
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run a mixed-precision candidate: {one_line(exc)}") from None


@dataclass
class LayerCost:
    """What moving one layer alone back to float does to the ranking images' logits."""

    layer: str
    op: str
    rel_l2: float  # with only this layer in float
    gain: float  # the INT8 graph's rel L2 minus ``rel_l2``: the error this layer's quantization causes


@dataclass
class Step:
    """One greedy step: the layers in float so far (the last one added), and what it measured."""

    layers: int
    added: str
    rel_l2: float
    cosine: float
    top1_agreement: float
    gate: str  # "passed", "failed: <why>", or "not run" (ranking-image error still above the gate)


@dataclass
class FallbackResult:
    """The search's answer: the layers moved back to float (empty when it gave up) and the record."""

    passed: bool
    layers: list[str]
    quantized_layers: int
    limit: int
    ranked_on: str
    before: dict[str, float]
    after: dict[str, float] | None
    search_s: float
    ranking: list[LayerCost] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    graph: onnx.ModelProto | None = field(default=None, repr=False)
    report: ValidationReport | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "layers": list(self.layers),
            "quantized_layers": self.quantized_layers,
            "limit": self.limit,
            "ranked_by": "rank-and-revert: the rel L2 that moving each layer alone to float removes",
            "ranked_on": self.ranked_on,
            "before": self.before,
            "after": self.after,
            "search_s": round(self.search_s, 2),
            "ranking": [asdict(c) for c in self.ranking[: max(self.limit, 10)]],
            "steps": [asdict(s) for s in self.steps],
        }

    def record(self) -> dict[str, Any]:
        """What the graph's metadata keeps (``int8_fallback``): the layers, the error before and after, the time."""
        return {"layers": list(self.layers), "before": self.before, "after": self.after,
                "search_s": round(self.search_s, 2), "ranked_on": self.ranked_on}


def default_limit(quantized: int) -> int:
    """At most a quarter of the quantized layers go back to float (at least one)."""
    return max(1, quantized // 4)


def rank(
    quantized: onnx.ModelProto, reference: onnx.ModelProto, x: np.ndarray, ref_logits: np.ndarray,
    *, threads: int | None = None, progress: Callable[[int, int], None] | None = None,
) -> tuple[list[LayerCost], tuple[float, float, float]]:
    """Every quantized layer's cost (``LayerCost``), costliest first, and the INT8 graph's own
    ``logits_error``."""
    before = logits_error(_session_logits(quantized, x, threads), ref_logits)
    base = before[0]
    ops = {n.name: n.op_type for n in quantized.graph.node}
    layers = quantized_layers(quantized)
    costs = []
    for i, name in enumerate(layers):
        rel = logits_error(_session_logits(revert(quantized, reference, [name]), x, threads), ref_logits)[0]
        costs.append(LayerCost(name, ops[name], rel, base - rel))
        if progress is not None:
            progress(i + 1, len(layers))
    costs.sort(key=lambda c: -c.gain)
    return costs, before


def search(
    quantized: onnx.ModelProto,
    reference: onnx.ModelProto,
    x: np.ndarray,
    ref_logits: np.ndarray,
    gate: Callable[[onnx.ModelProto], ValidationReport],
    tolerance: Tolerance,
    *,
    ranked_on: str,
    limit: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> FallbackResult:
    """Rank, then move layers back to float one at a time until ``gate`` passes or ``limit`` is reached.

    ``x``/``ref_logits``: the ranking images and PyTorch FP32's logits on them; ``gate(graph)``: the full
    validation of a candidate (the export's cases, held-out images included)."""
    t0 = time.perf_counter()
    count = len(quantized_layers(quantized))
    if count == 0:
        raise ExportError("the INT8 graph has no quantized layer to move back to float")
    limit = default_limit(count) if limit is None else max(1, min(limit, count))
    log(f"int8 fallback: ranking {count} quantized layers on {ranked_on}")
    costs, (rel0, cos0, top0) = rank(quantized, reference, x, ref_logits, threads=threads)
    result = FallbackResult(False, [], count, limit, ranked_on,
                            {"rel_l2": rel0, "cosine": cos0, "top1_agreement": top0}, None, 0.0, costs)
    chosen: list[str] = []
    for cost in costs[:limit]:
        chosen.append(cost.layer)
        candidate = revert(quantized, reference, chosen)
        rel, cos, top1 = logits_error(_session_logits(candidate, x, threads), ref_logits)
        near = rel <= tolerance.max_rel_l2 and (tolerance.min_cosine is None or cos >= tolerance.min_cosine)
        verdict = "not run"
        if near:
            report = gate(candidate)
            verdict = "passed" if report.passed else "failed: " + "; ".join(report.failures)[:200]
            if report.passed:
                result.passed, result.layers, result.graph, result.report = True, list(chosen), candidate, report
                result.after = {"rel_l2": rel, "cosine": cos, "top1_agreement": top1}
        result.steps.append(Step(len(chosen), cost.layer, rel, cos, top1, verdict))
        log(f"int8 fallback: {len(chosen)} in float (+{cost.layer}): rel L2 {rel:.4g}, cosine {cos:.5f}, gate {verdict}")
        if result.passed:
            break
    result.search_s = time.perf_counter() - t0
    return result
