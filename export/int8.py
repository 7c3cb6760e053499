"""FP32 -> INT8 Q/DQ graph (explicit quantization) for strongly typed TensorRT builds, calibrated on images.

TensorRT 10 deprecated and 11 removed implicit INT8 calibration; INT8 now lives in
the graph as QuantizeLinear/DequantizeLinear pairs, which a strongly typed build
turns into INT8 kernels. The graph follows TensorRT's rules for explicit
quantization:

- symmetric INT8, zero points 0; per-channel scales on conv and linear weights
  along the output-channel axis (Conv: axis 0 of [O, I, kh, kw]; MatMul: axis 1 of
  [K, N]), per-tensor scales on activations;
- Q/DQ on the inputs of every Conv and MatMul (activation and weight), none on
  their outputs, so the following element-wise ops run in floating point;
- biases stay floating point (TensorRT's Q/DQ types are INT8, FP8, INT4 and FP4:
  there is no INT32 bias dequantization);
- LayerNormalization, the reductions and the head's Gemm are not quantized;
- float32 graph input and output.

Everything that is not INT8 runs in FP16, as in the FP16 graph (INT8+FP16, what
trtexec ``--best`` gives): after quantization the graph is moved to opset 19 —
the first whose QuantizeLinear/DequantizeLinear take float16 scales, so that a
DequantizeLinear hands FP16 straight to its Conv or MatMul — and converted with
``export.fp16.to_fp16`` (LayerNormalization and the reductions stay FP32 there).

``layout="cpu"`` (``export --int8-layout cpu``) makes the graph onnxruntime and
OpenVINO run fastest on x86 CPUs instead, measured in benchmarks/RESULTS.md:
unsigned 8-bit asymmetric activations (the u8s8 VNNI kernels), Q/DQ on outputs too
(so onnxruntime chains QLinearConv/QLinearMatMul instead of re-quantizing at every
layer), INT32 biases and FP32 everywhere else (onnxruntime's CPU provider has no
FP16 kernels for most ops: the TensorRT-shaped graph runs 2-3x slower than FP32
there). TensorRT cannot build it (it takes symmetric signed INT8 only): ``build``
refuses it.

Quantizer: ``onnxruntime.quantization.quantize_static`` (QDQ format), a well-kept,
CPU-installable quantizer with MinMax, Entropy and Percentile calibration. NVIDIA
ModelOpt's ONNX quantizer would also do, but ``nvidia-modelopt[onnx]`` pulls
``onnxruntime-gpu`` and ``cupy``, which break a CPU install (see export/fp16.py).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from convmlp.preprocess import ImageError, list_images, load_image, preprocess
from convmlp.weights import PretrainedCfg
from deploy.errors import one_line

from .errors import ExportError, ExportOptionError
from .fp16 import to_fp16

__all__ = [
    "METHODS",
    "LAYOUTS",
    "LAYOUT_FLOAT",
    "QUANTIZED_OPS",
    "EXCLUDED_NODES",
    "Q_DQ_OPSET",
    "CalibrationSet",
    "calibration_set",
    "calibration_inputs",
    "quantize_int8",
    "quantizer_version",
    "count_qdq",
    "MIN_SCALE",
    "clamp_scales",
    "vnni",
    "to_7bit_weights",
    "for_openvino",
]

METHODS = ("minmax", "entropy", "percentile")
#: ``tensorrt``: TensorRT's explicit-quantization rules, INT8+FP16; ``cpu``: fastest on x86 CPU runtimes
LAYOUTS = ("tensorrt", "cpu")
#: the float precision each layout runs its unquantized ops in (and a layer moved back to float)
LAYOUT_FLOAT = {"tensorrt": "fp16", "cpu": "fp32"}
QUANTIZED_OPS = ("Conv", "MatMul")
#: the classifier head (global pool -> Gemm) stays in floating point
EXCLUDED_NODES = ("head/Gemm",)
#: QuantizeLinear/DequantizeLinear accept float16 scales from opset 19
Q_DQ_OPSET = 19
#: the smallest Q/DQ scale of the TensorRT layout: FP16's smallest normal number (TensorRT refuses zero
#: scales, and a subnormal FP16 scale loses its precision)
MIN_SCALE = 2.0**-14
QUANTIZER = "onnxruntime.quantization quantize_static (QDQ)"


def vnni() -> bool:
    """Whether this CPU has an INT8 dot-product unit (AVX512_VNNI, AVX_VNNI or AMX): without one,
    onnxruntime's u8s8 kernels multiply through int16 pairs that saturate (``VPMADDUBSW``), so the CPU
    layout quantizes weights to 7 bits (``reduce_range``), as onnxruntime's quantization guide advises.
    Measured on ConvMLP-S, AMD EPYC without VNNI: rel L2 0.104-0.121 with 8-bit weights (fails the gate),
    0.071-0.080 with 7-bit."""
    from deploy.machine import cpu_features

    flags = set(cpu_features()["flags"])
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def quantizer_version() -> str | None:
    """The onnxruntime (or onnxruntime-gpu) version whose quantizer is used."""
    from deploy.machine import dist_version

    return dist_version("onnxruntime", "onnxruntime-gpu")


@dataclass
class CalibrationSet:
    """The images calibration runs on, the ones held out for validation, and the facts recorded."""

    root: Path
    files: list[Path]
    held_out: list[Path]
    method: str
    found: int
    sha256: str  # of the sorted relative paths of ``files``, one per line
    skipped: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        return {
            "images": len(self.files),
            "found": self.found,
            "method": self.method,
            "files_sha256": self.sha256,
            "held_out": len(self.held_out),
            "skipped": list(self.skipped),
        }


def calibration_set(
    root: str | Path, count: int, method: str, *, seed: int = 0, held_out: int = 64
) -> CalibrationSet:
    """Pick ``count`` readable images under ``root`` reproducibly (same folder, same pick), and up to
    ``held_out`` readable others for validation; when the folder holds no more than ``count``, a sixth
    of them (at most ``held_out``) is held out so that the gate still sees images calibration did not use.

    Images are decoded before any export work, in the pick's order, until enough are found; the
    unreadable ones are named in ``skipped``. ``ExportOptionError`` for bad arguments, an empty folder,
    or one where no image can be read (naming the first few).
    """
    root = Path(root)
    if method not in METHODS:
        raise ExportOptionError(f"--calibration-method must be one of {', '.join(METHODS)}, not {method!r}")
    if count < 1:
        raise ExportOptionError(f"--calibration-count must be >= 1, got {count}")
    if not root.is_dir():
        raise ExportOptionError(f"--calibration {root}: not a folder")
    images = list_images(root)
    if not images:
        raise ExportOptionError(f"--calibration {root}: no image files in it (searched recursively)")
    order = [images[i] for i in np.random.default_rng(seed).permutation(len(images))]
    readable, skipped = _readable(order, count + held_out)
    if not readable:
        named = "; ".join(skipped[:3]) + (f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else "")
        raise ExportOptionError(f"--calibration {root}: none of its {len(images)} images can be read: {named}")
    if len(readable) > count:
        chosen, rest = readable[:count], readable[count:count + held_out]
    else:  # no more than asked for: hold out a sixth, so that the gate still sees unseen images
        keep = len(readable) - min(held_out, len(readable) // 6)
        chosen, rest = readable[:keep], readable[keep:]
    chosen.sort(key=lambda p: p.relative_to(root).as_posix())
    listing = "\n".join(p.relative_to(root).as_posix() for p in chosen) + "\n"
    return CalibrationSet(root, chosen, rest, method, len(images), hashlib.sha256(listing.encode()).hexdigest(),
                          skipped)


def _readable(order: Sequence[Path], wanted: int) -> tuple[list[Path], list[str]]:
    """The first ``wanted`` files of ``order`` that decode (decoded in a thread pool: Pillow releases the
    GIL), and ``path: why`` for each one that does not."""
    from concurrent.futures import ThreadPoolExecutor

    def why(path: Path) -> str | None:
        try:
            load_image(path)
        except ImageError as exc:
            text = str(exc)
            return text if text.startswith(str(path)) else f"{path}: {text}"
        return None

    readable: list[Path] = []
    skipped: list[str] = []
    done = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        while len(readable) < wanted and done < len(order):
            chunk = order[done:done + wanted - len(readable)]
            done += len(chunk)
            for path, problem in zip(chunk, pool.map(why, chunk), strict=True):
                (skipped if problem else readable).append(problem or path)  # type: ignore[arg-type]
    return readable, skipped


def calibration_inputs(
    files: Sequence[Path], cfg: PretrainedCfg, *, skipped: list[str] | None = None
) -> Iterator[np.ndarray]:
    """One preprocessed (1, 3, H, W) float32 batch per readable file (the variant's input size);
    unreadable files are named in ``skipped`` (once, ``path: why``) and left out."""
    for path in files:
        try:
            yield preprocess(load_image(path), cfg)
        except ImageError as exc:
            if skipped is not None:
                text = str(exc)
                skipped.append(text if text.startswith(str(path)) else f"{path}: {text}")


def quantize_int8(
    proto: onnx.ModelProto,
    inputs: Iterator[np.ndarray],
    *,
    method: str = "minmax",
    layout: str = "tensorrt",
    input_name: str = "input",
    progress: Callable[[int], None] | None = None,
    reduce_range: bool | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Calibrate on ``inputs`` and return the Q/DQ graph of the FP32 ``proto`` and its facts:
    INT8+FP16 by TensorRT's rules (``layout="tensorrt"``) or the x86 CPU layout (``"cpu"``).

    ``progress(n)`` is called after each calibration batch. ``reduce_range``: 7-bit weights (None: for
    the CPU layout on a CPU without VNNI, see ``vnni``). Raises ``ExportError`` when no input came or
    the quantizer fails.
    """
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError:
        raise ExportError("--int8 needs onnxruntime (its quantizer): pip install 'convmlp-deploy[cpu]'") from None
    if method not in METHODS:
        raise ExportOptionError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if layout not in LAYOUTS:
        raise ExportOptionError(f"unknown INT8 layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    cpu = layout == "cpu"
    if reduce_range is None:  # 7-bit weights where u8s8 kernels would saturate (``vnni``)
        reduce_range = cpu and not vnni()

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.seen = 0
            self.exhausted = False

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(inputs, None)
            if batch is None:
                self.exhausted = True
                return None
            self.seen += 1
            if progress is not None:
                progress(self.seen)
            return {input_name: batch}

    reader = Reader()
    proto = _copy(proto)  # quantize_static changes the model it is given: never the caller's
    present = {n.name for n in proto.graph.node}
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="convmlp-int8-") as tmp:
        out = Path(tmp) / "qdq.onnx"
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint at WARNING on every call
        try:
            quantize_static(
                proto,
                out,
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=[n for n in EXCLUDED_NODES if n in present],
                calibrate_method=calibrate,
                extra_options={
                    "ActivationSymmetric": not cpu,
                    "WeightSymmetric": True,
                    "QuantizeBias": cpu,
                    "OpTypesToExcludeOutputQuantization": [] if cpu else list(QUANTIZED_OPS),
                    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                },
            )
        except Exception as exc:
            if reader.seen == 0 and reader.exhausted:
                raise ExportError("--calibration: no image could be read for calibration") from None
            raise ExportError(f"INT8 quantization failed: {one_line(exc)}") from None
        finally:
            logger.setLevel(level)
        if reader.seen == 0:
            raise ExportError("--calibration: no image could be read for calibration")
        qdq = onnx.load(str(out))
    graph = qdq if cpu else to_fp16(_to_opset(qdq, Q_DQ_OPSET))
    clamped = 0 if cpu else clamp_scales(graph)
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)
    facts = {
        "layout": layout,
        "quantizer": QUANTIZER,
        "onnxruntime": quantizer_version(),
        "calibration_batches": reader.seen,
        "method": method,
        "quantized_ops": list(QUANTIZED_OPS),
        "excluded_nodes": [n for n in EXCLUDED_NODES if n in present],
        "opset": opset,
        "weight_bits": 7 if reduce_range else 8,
        "clamped_scales": clamped,
        "min_scale": None if cpu else MIN_SCALE,
        **count_qdq(graph),
    }
    return graph, facts


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def _to_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, opset)
    except Exception as exc:
        raise ExportError(f"cannot move the Q/DQ graph from opset {current} to {opset}: {exc}") from None


def count_qdq(proto: onnx.ModelProto) -> dict[str, int]:
    """How many Q and DQ nodes, and how many Conv/MatMul consume a dequantized weight."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name for i in proto.graph.initializer}
    quantized = sum(
        1 for n in proto.graph.node
        if n.op_type in QUANTIZED_OPS and len(n.input) > 1
        and producers.get(n.input[1]) is not None and producers[n.input[1]].op_type == "DequantizeLinear"
        and producers[n.input[1]].input[0] in inits
    )
    ops = [n.op_type for n in proto.graph.node]
    return {"quantize_nodes": ops.count("QuantizeLinear"), "dequantize_nodes": ops.count("DequantizeLinear"),
            "int8_layers": quantized}


def clamp_scales(proto: onnx.ModelProto, minimum: float = MIN_SCALE) -> int:
    """Make every Q/DQ scale of ``proto`` positive, finite and >= ``minimum``; return how many values changed.

    Dead channels (all-zero weights) get a zero scale, nearly dead ones a subnormal one, and a constant
    activation a zero range. An activation scale is raised in place (its Q and DQ share it). A weight's
    per-channel scale is raised and that channel's INT8 values re-quantized to the new scale
    (``round(q * old / new)``), so the dequantized weight stays what it was, to the new step.
    """
    inits = {t.name: t for t in proto.graph.initializer}
    weights_of: dict[str, tuple[str, int]] = {}  # scale initializer -> (its INT8 weight, channel axis)
    scales = []
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
            continue
        if node.input[1] in inits and node.input[1] not in scales:
            scales.append(node.input[1])
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            weights_of[node.input[1]] = (node.input[0], axis)
    changed = 0
    for name in scales:
        scale = numpy_helper.to_array(inits[name])
        old = scale.astype(np.float64)
        bad = ~np.isfinite(old) | (old < minimum)
        if not bad.any():
            continue
        changed += int(bad.sum())
        new = np.where(bad, minimum, old)
        inits[name].CopyFrom(numpy_helper.from_array(new.astype(scale.dtype), name))
        if name in weights_of and scale.ndim == 1:
            wname, axis = weights_of[name]
            q = numpy_helper.to_array(inits[wname])
            shape = [1] * q.ndim
            shape[axis] = -1
            ratio = np.where(np.isfinite(old) & (old > 0), old, 0.0) / new
            requant = np.clip(np.round(q.astype(np.float64) * ratio.reshape(shape)), -127, 127)
            inits[wname].CopyFrom(numpy_helper.from_array(requant.astype(q.dtype), wname))
    return changed


def to_7bit_weights(proto: onnx.ModelProto) -> int:
    """Re-quantize the INT8 weights of the TensorRT-layout ``proto`` in place to 7 bits; return how many.

    Each weight ``DequantizeLinear`` gets ``round(q / 2)`` in [-64, 64] and its per-channel scale doubled,
    so a weight dequantizes to what it was, to twice the step: the weights OpenVINO's u8s8 kernels need on
    a CPU without VNNI (see ``vnni``; 255 x 64 x 2 fits the int16 pair sum that 255 x 127 x 2 overflows).
    Without it the TensorRT-layout IR of a ConvMLP-S failed its INT8 gate on an AVX2-only EPYC (README, INT8).
    Only the TensorRT layout: its biases stay float (the CPU layout's INT32 biases would need their
    scales redone, and that layout is quantized to 7 bits already where it matters).
    """
    inits = {t.name: t for t in proto.graph.initializer}
    done: set[str] = set()
    doubled: set[str] = set()  # a scale shared by two weights is doubled once
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] in done or node.input[0] not in inits:
            continue
        weight, scale = inits[node.input[0]], inits.get(node.input[1])
        if scale is None:
            continue
        if weight.data_type == onnx.TensorProto.INT32:
            raise ExportError("to_7bit_weights: the graph has INT8-quantized biases (the CPU layout); "
                              "quantize it with reduce_range instead")
        if weight.data_type != onnx.TensorProto.INT8:
            continue
        q = numpy_helper.to_array(weight).astype(np.float64)
        step = numpy_helper.to_array(scale)
        weight.CopyFrom(numpy_helper.from_array(np.clip(np.round(q / 2), -64, 64).astype(np.int8), weight.name))
        if scale.name not in doubled:
            scale.CopyFrom(numpy_helper.from_array((step.astype(np.float64) * 2).astype(step.dtype), scale.name))
            doubled.add(scale.name)
        done.add(weight.name)
    return len(done)


def for_openvino(graph: bytes, layout: str) -> tuple[bytes, int]:
    """The INT8 graph ``graph`` (its ``layout``) as OpenVINO should get it on this CPU, and how many weights
    were re-quantized for it: the TensorRT layout's weights go to 7 bits where the CPU has no VNNI
    (``to_7bit_weights``); the CPU layout is quantized to 7 bits there already, and with VNNI nothing moves."""
    if layout == "cpu" or vnni():
        return graph, 0
    proto = onnx.load_from_string(graph)
    count = to_7bit_weights(proto)
    return proto.SerializeToString(), count
