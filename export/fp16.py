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

__all__ = ["FP32_OPS", "CONVERTER", "converter_version", "to_fp16"]

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
