"""PyTorch -> ONNX with named dynamic dims, and the graph facts the pipeline checks."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from convmlp.spec import IOSpec

from .errors import ExportError

__all__ = [
    "MIN_OPSET",
    "MAX_OPSET",
    "EXPORTER",
    "export_onnx",
    "export_onnx_proto",
    "dynamic_dims",
    "check_dynamic",
    "set_metadata",
    "get_metadata",
    "op_counts",
]

#: LayerNormalization is one ONNX op from opset 17; torch's TorchScript exporter stops at 20.
MIN_OPSET = 17
MAX_OPSET = 20
#: torch.onnx's TorchScript exporter. The dynamo exporter (torch.export) currently
#: rejects ConvMLP's symbolic height/width ranges, so it is not used.
EXPORTER = "torch.onnx (TorchScript)"


def export_onnx_proto(
    model: nn.Module, spec: IOSpec, *, opset: int = MIN_OPSET, sample_hw: tuple[int, int] = (224, 224)
) -> onnx.ModelProto:
    """Trace ``model`` (eval mode, FP32) to an in-memory ONNX graph named by ``spec``."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET}")
    model = model.eval()
    sample = torch.zeros(1, 3, *sample_hw)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes
        torch.onnx.export(
            model,
            (sample,),
            buf,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    check_dynamic(proto, spec)
    return proto


def export_onnx(model: nn.Module, spec: IOSpec, path: Path, *, opset: int = MIN_OPSET) -> Path:
    """Export ``model`` to ``path`` (written atomically, checked with the full ONNX checker)."""
    proto = export_onnx_proto(model, spec, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    from deploy.artifacts import atomic_write_bytes

    return atomic_write_bytes(path, proto.SerializeToString())


def dynamic_dims(proto: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Each graph input/output's dims: ``str`` for a named dynamic dim, ``int`` for a fixed one."""
    out: dict[str, list[int | str]] = {}
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_param if d.dim_param else d.dim_value for d in dims]
    return out


def check_dynamic(proto: onnx.ModelProto, spec: IOSpec) -> None:
    """Raise if any dim ``spec`` names dynamic became fixed (or an I/O tensor is missing)."""
    dims = dynamic_dims(proto)
    for t in spec.inputs + spec.outputs:
        got = dims.get(t.name)
        if got is None:
            raise ExportError(f"graph has no tensor {t.name!r} (has {', '.join(dims)})")
        for axis in t.dynamic_axes:
            if axis >= len(got) or not isinstance(got[axis], str):
                raise ExportError(f"{t.name}: dim {axis} is not dynamic in the graph ({got})")


def set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace ``metadata_props`` entries with ``props`` (others are kept)."""
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def get_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
