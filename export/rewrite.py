"""Exact graph rewrites that put exporter output into the form runtimes fuse.

``canonical_gelu``: torch's dynamo exporter writes the exact (erf) GELU as
``x * (0.5 * (1 + erf(x / sqrt2)))``. onnxruntime's GELU fusion matches
``(x * (1 + erf(x / sqrt2))) * 0.5`` (what the TorchScript exporter writes) and
``(x * 0.5) * (1 + erf(x / sqrt2))``, but not this order, so on the dynamo graph
every GELU ran as five separate element-wise kernels and fc1's bias add as a
sixth, instead of one ``BiasGelu``. The rewrite only moves the factor 0.5 to the
end. Multiplying by 0.5 is exact in binary floating point (short of
subnormals), so the rewritten graph computes bit-for-bit what the original does.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["canonical_gelu"]


def _scalar(name: str, consts: dict[str, np.ndarray]) -> float | None:
    value = consts.get(name)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(-1)[0])


def _constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _is(value: float | None, target: float) -> bool:
    return value is not None and math.isclose(value, target, rel_tol=1e-6)


def canonical_gelu(proto: onnx.ModelProto) -> int:
    """Rewrite ``x * (0.5 * (1 + erf(x / sqrt2)))`` into ``(x * (1 + erf(x / sqrt2))) * 0.5`` in place.

    Returns how many GELUs were rewritten. Nothing else in the graph changes.
    """
    consts = _constants(proto)
    producer = {out: node for node in proto.graph.node for out in node.output}
    uses: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    graph_outputs = {o.name for o in proto.graph.output}

    def other(node: onnx.NodeProto, name: str) -> str | None:
        ins = list(node.input)
        if len(ins) != 2 or name not in ins:
            return None
        return ins[1] if ins[0] == name else ins[0]

    rewritten = 0
    for outer in proto.graph.node:
        if outer.op_type != "Mul" or len(outer.input) != 2:
            continue
        for inner_out in outer.input:
            inner = producer.get(inner_out)
            if inner is None or inner.op_type != "Mul" or uses.get(inner_out) != 1 or inner_out in graph_outputs:
                continue
            half = next((i for i in inner.input if _is(_scalar(i, consts), 0.5)), None)
            if half is None:
                continue
            add_out = other(inner, half)
            add = producer.get(add_out or "")
            if add is None or add.op_type != "Add":
                continue
            erf_out = next((i for i in add.input if producer.get(i) is not None and producer[i].op_type == "Erf"), None)
            if erf_out is None or not _is(_scalar(other(add, erf_out) or "", consts), 1.0):
                continue
            div = producer.get(producer[erf_out].input[0])
            if div is None or div.op_type != "Div" or not _is(_scalar(div.input[1], consts), math.sqrt(2.0)):
                continue
            x = div.input[0]
            if other(outer, inner_out) != x:
                continue
            del inner.input[:]
            inner.input.extend([x, add_out])
            del outer.input[:]
            outer.input.extend([inner_out, half])
            rewritten += 1
            break
    return rewritten
