"""What an exported ConvMLP ONNX graph says about itself (read before building).

The exporter writes ``metadata_props`` (variant, num_classes, kind, precision,
mean, std, ...); graphs from elsewhere may lack them, so every field has a
fallback read from the graph itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from convmlp.weights import file_sha256

from ..errors import DeployError
from ..ir import is_ir, read_ir

__all__ = ["OnnxInfo", "inspect_onnx", "file_sha256"]


@dataclass
class OnnxInfo:
    """Inputs, outputs, precision and metadata of one ONNX file."""

    path: Path
    sha256: str
    input_names: list[str]
    output_names: list[str]
    precision: str  # "int8" for a Q/DQ graph, "fp16" if it carries FP16 weights or tensors, else "fp32"
    kind: str  # "classifier" or "features"
    variant: str | None
    num_classes: int | None
    metadata: dict[str, str] = field(default_factory=dict)


def inspect_onnx(path: str | os.PathLike[str]) -> OnnxInfo:
    """Read names, precision and metadata of ``path`` (weights in external files are not loaded).

    An OpenVINO IR ``.xml`` (``export --openvino``) is read through ``deploy.ir``.
    """
    import onnx

    if is_ir(path):
        return _inspect_ir(path)
    p = Path(path)
    if not p.is_file():
        raise DeployError(f"ONNX file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError & co for garbage
        raise DeployError(f"{p} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:160]})") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    outputs = [o.name for o in graph.output]
    meta = {m.key: m.value for m in model.metadata_props}

    half = onnx.TensorProto.FLOAT16
    has_half = any(t.data_type == half for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == half for v in list(graph.value_info) + list(graph.output)
    ) or any(
        a.name == "to" and a.i == half for n in graph.node if n.op_type == "Cast" for a in n.attribute
    )
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    precision = meta.get("precision") or ("int8" if has_qdq else "fp16" if has_half else "fp32")
    if precision not in ("fp16", "fp32", "int8"):
        raise DeployError(f"{p}: metadata precision {precision!r} is not fp32, fp16 or int8")

    kind = meta.get("kind") or ("features" if outputs and all(o.startswith("f") for o in outputs) else "classifier")
    num_classes: int | None = None
    if meta.get("num_classes"):
        try:
            num_classes = int(meta["num_classes"])
        except ValueError:
            raise DeployError(f"{p}: metadata num_classes {meta['num_classes']!r} is not an integer") from None
    elif kind == "classifier" and graph.output:
        dims = graph.output[0].type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].HasField("dim_value"):
            num_classes = int(dims[1].dim_value)
    return OnnxInfo(
        path=p,
        sha256=file_sha256(p),
        input_names=inputs,
        output_names=outputs,
        precision=precision,
        kind=kind,
        variant=meta.get("variant") or None,
        num_classes=num_classes,
        metadata=meta,
    )


def _inspect_ir(path: str | os.PathLike[str]) -> OnnxInfo:
    info = read_ir(path)
    meta = info.metadata
    kind = meta.get("kind") or ("classifier" if len(info.outputs) == 1 else "features")
    num_classes = None
    if meta.get("num_classes", "").isdigit():
        num_classes = int(meta["num_classes"])
    elif kind == "classifier" and info.outputs and len(info.outputs[0].dims) == 2:
        num_classes = info.outputs[0].dims[1] if info.outputs[0].dims[1] > 0 else None
    return OnnxInfo(
        path=info.path,
        sha256=file_sha256(info.path),
        input_names=info.input_names,
        output_names=info.output_names,
        precision=info.precision,
        kind=kind,
        variant=meta.get("variant") or None,
        num_classes=num_classes,
        metadata=meta,
    )
