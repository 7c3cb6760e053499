"""OpenVINO IR (``.xml`` + ``.bin``) from an exported ONNX graph, for users who deploy IR.

Every graph but the FP16 one gets an IR; the INT8 graph of either layout too (the TensorRT one through
``export.fp16.to_fp32``, see ``write_ir``).

``ov.convert_model`` reads the ONNX graph (its bytes, so that the IR records no
temp-file path), and ``ov.save_model`` writes it with the weights kept in FP32
(``compress_to_fp16=False``): the IR computes what its ONNX graph computes, and
precision stays a run-time choice (``--precision fp32|bf16|fp16|auto``), as it is
for the ONNX graph on OpenVINO. A Q/DQ graph becomes an IR with FakeQuantize
layers, which OpenVINO runs in INT8.

The graph's metadata goes into the IR's ``rt_info`` under ``convmlp_deploy``
(``deploy.modelfile.ir`` reads it back), with the sha256 of the ONNX graph it came from.
"""

from __future__ import annotations

import io
from pathlib import Path

from deploy.errors import BackendUnavailable
from deploy.modelfile.ir import IR_SECTION
from deploy.runners.openvino import first_line, import_openvino

from .errors import ExportError
from .fp16 import has_fp16, to_fp32

__all__ = ["IR_SUFFIX", "check_openvino", "ir_name", "openvino_version", "write_ir"]

#: what ``convmlp_s.onnx`` becomes: ``convmlp_s.openvino.xml`` (+ ``.bin``)
IR_SUFFIX = ".openvino.xml"


def ir_name(onnx_name: str) -> str:
    """``convmlp_s.int8.onnx`` -> ``convmlp_s.int8.openvino.xml``."""
    stem = onnx_name[: -len(".onnx")] if onnx_name.endswith(".onnx") else onnx_name
    return stem + IR_SUFFIX


def check_openvino() -> None:
    """``ExportError`` (exit 1) naming the extra when OpenVINO is missing; called before any work."""
    try:
        import_openvino()
    except BackendUnavailable as exc:
        raise ExportError(f"--openvino: {exc}") from None


def openvino_version() -> str:
    return str(import_openvino().__version__).split("-")[0]


def write_ir(onnx_bytes: bytes, xml: Path, metadata: dict[str, str]) -> Path:
    """Convert the ONNX graph ``onnx_bytes`` and save it as ``xml`` (and its ``.bin``); return ``xml``.

    A graph with FP16 parts (the TensorRT-layout INT8 graph: INT8 + FP16, FP16 Q/DQ scales) is cast to
    FP32 first (``export.fp16.to_fp32``, exact): OpenVINO's converter cannot take FP16 Q/DQ scales (its
    TransposeFQ pass meets an f32 and an f16 constant in one Subtract and throws, OpenVINO 2026.4). The IR
    keeps the same INT8 weights and scales; its float parts run at OpenVINO's run-time precision, as they
    do for every IR. The metadata records it (``ir_float``).
    """
    import onnx

    ov = import_openvino()
    proto = onnx.load_from_string(onnx_bytes)
    if has_fp16(proto):
        onnx_bytes = to_fp32(proto).SerializeToString()
        metadata = {**metadata, "ir_float": "fp32: the graph's FP16 parts cast to FP32 for OpenVINO's converter"}
    try:
        model = ov.convert_model(io.BytesIO(onnx_bytes))
    except Exception as exc:  # OpenVINO's conversion errors are multi-line reports
        raise ExportError(f"OpenVINO cannot convert the graph for {xml.name} ({first_line(exc)})") from None
    for key, value in metadata.items():
        model.set_rt_info(value, [IR_SECTION, key])
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml
