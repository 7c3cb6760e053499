"""FP32 -> mixed-precision FP16 graph for strongly typed TensorRT builds.

TensorRT 10.12 deprecated and 11 removed the weak-typing ``BuilderFlag.FP16``:
precision now lives in the ONNX graph. Converter: onnxconverter-common's
``float16.convert_float_to_float16`` with an op block list. It is a small,
pure-Python, CPU-installable package; NVIDIA ModelOpt's AutoCast
(``modelopt.onnx.autocast``) would also do, but ``nvidia-modelopt[onnx]`` pulls
``onnxruntime-gpu`` and ``cupy``, which break a CPU install (onnxruntime-gpu
lands beside onnxruntime and shadows it).

Kept in FP32: ``LayerNormalization`` (ConvMLP has 25-41 of them; a half-precision
LayerNorm is the classic accuracy trap) and the reductions (``ReduceMean`` of the
head's global pool). Everything else (convs, linears, GELU, residual adds) runs in
FP16. Input and output stay float32, so callers feed and read the same tensors.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import onnx

from .errors import ExportError

__all__ = ["FP32_OPS", "CONVERTER", "converter_version", "to_fp16", "to_fp32", "has_fp16"]

FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "GlobalAveragePool",
    "Softmax",
)
CONVERTER = "onnxconverter-common float16"


def converter_version() -> str | None:
    try:
        return importlib.metadata.version("onnxconverter-common")
    except importlib.metadata.PackageNotFoundError:
        return None


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``proto`` with FP16 weights/activations, ``FP32_OPS`` and float32 I/O kept."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError("--fp16 needs onnxconverter-common (pip install onnxconverter-common)") from None
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16" notes for tiny weights
        out = float16.convert_float_to_float16(copy, keep_io_types=True, op_block_list=block)
    for vi in list(out.graph.input) + list(out.graph.output):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"FP16 conversion changed the type of I/O tensor {vi.name!r}")
    return out


def has_fp16(proto: onnx.ModelProto) -> bool:
    """Whether ``proto`` carries FP16 initializers or casts to FP16."""
    half = onnx.TensorProto.FLOAT16
    return any(t.data_type == half for t in proto.graph.initializer) or any(
        a.name == "to" and a.i == half for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute
    )


def to_fp32(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` with every FP16 initializer, cast and tensor type made FP32: the inverse of
    ``to_fp16`` for tools that cannot take a mixed graph. The FP16 values stay exactly what they were
    (FP16 -> FP32 is exact); only the arithmetic around them runs in FP32."""
    from onnx import numpy_helper

    half, full = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    for t in g.initializer:
        if t.data_type == half:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype("float32"), t.name))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == half:
                a.i = full
            if a.name == "value" and a.t.data_type == half:  # Constant nodes
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype("float32"), a.t.name))
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == half:
            vi.type.tensor_type.elem_type = full
    return out
