"""PyTorch -> ONNX with named dynamic dims, and the graph facts the pipeline checks.

Two torch exporters, chosen by name (``EXPORTERS``):

- ``dynamo`` (default): ``torch.onnx.export(..., dynamo=True)``, which captures the
  model with ``torch.export`` and translates it with onnxscript's torchlib. It is
  torch's default since 2.9 and the exporter that gets fixes. Batch, height and
  width are ``Dim.DYNAMIC``; torch names them ``s0``, ``s53``... and
  ``_rename_dims`` gives them back the I/O spec's names (``batch``, ``height``,
  ``width``). Nodes are renamed after the module they come from
  (``stages.0.blocks.1.channel_mlp1.fc1/MatMul``) and torch's per-node debug
  metadata (which holds absolute source paths) is dropped, so that the bytes of a
  graph do not depend on where the code lives. Its GELUs are put in the order
  onnxruntime fuses (``export.rewrite.canonical_gelu``, an exact rewrite).
- ``torchscript``: the TorchScript exporter (``dynamo=False``), deprecated by torch
  ("The feature will be removed"); kept for old torch versions and as a fallback.

Warnings either exporter raises are returned with the graph (``ExportedGraph.notes``)
for the pipeline to print and record, never silenced. The one exception is
``TORCH_INTERNAL_WARNINGS``: warnings torch raises from inside its own code about its
own internals, which no option of ours can change.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import inspect
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from convmlp.spec import IOSpec

from .errors import ExportError, ExportOptionError
from .rewrite import canonical_gelu

__all__ = [
    "EXPORTERS",
    "DEFAULT_EXPORTER",
    "ExporterInfo",
    "ExportedGraph",
    "exporter_info",
    "resolve_opset",
    "export_onnx",
    "export_onnx_proto",
    "dynamic_dims",
    "check_dynamic",
    "set_metadata",
    "get_metadata",
    "op_counts",
]


def _torch_constant(name: str, fallback: int) -> int:
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, name, fallback))
    except ImportError:  # pragma: no cover - layout of older/newer torch
        return fallback


@dataclass(frozen=True)
class ExporterInfo:
    """One torch ONNX exporter: its opset range and what it needs."""

    name: str
    title: str
    min_opset: int
    max_opset: int
    default_opset: int

    @property
    def opset_range(self) -> str:
        return f"{self.min_opset}..{self.max_opset}"


#: LayerNormalization is one ONNX op from opset 17. torchlib is written at opset 18:
#: below it, torch's version converter fails on ConvMLP and silently keeps 18, so 18 is
#: the dynamo exporter's floor. Ceilings are torch's own constants.
EXPORTERS: dict[str, ExporterInfo] = {
    "dynamo": ExporterInfo(
        "dynamo", "torch.onnx dynamo (torch.export + onnxscript)", 18,
        _torch_constant("ONNX_MAX_OPSET", 23), 18,
    ),
    "torchscript": ExporterInfo(
        "torchscript", "torch.onnx TorchScript (deprecated)", 17,
        _torch_constant("ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20), 17,
    ),
}
DEFAULT_EXPORTER = "dynamo"

#: (message regex, why it is not shown): raised inside torch about torch's own code.
TORCH_INTERNAL_WARNINGS: tuple[tuple[str, str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "torch.export deep-copies its own pytree specs (torch internals, torch 2.13)",
    ),
)


def exporter_info(name: str) -> ExporterInfo:
    """The exporter called ``name``; ``ExportOptionError`` (usage) for an unknown one."""
    if name not in EXPORTERS:
        raise ExportOptionError(f"unknown exporter {name!r}: choose one of {', '.join(EXPORTERS)}")
    return EXPORTERS[name]


def resolve_opset(exporter: str, opset: int | None) -> int:
    """``opset`` (or the exporter's default) if that exporter can produce it, else ``ExportOptionError``."""
    info = exporter_info(exporter)
    if opset is None:
        return info.default_opset
    if not info.min_opset <= opset <= info.max_opset:
        raise ExportOptionError(
            f"opset {opset} is not available with --exporter {exporter}: use {info.opset_range}"
        )
    return opset


def check_available(exporter: str) -> None:
    """Raise ``ExportError`` (one line, exit 1) when this torch lacks ``exporter``."""
    params = inspect.signature(torch.onnx.export).parameters
    if exporter == "dynamo":
        if "dynamic_shapes" not in params or not hasattr(torch.export, "Dim") or not hasattr(torch.export.Dim, "DYNAMIC"):
            raise ExportError(
                f"torch {torch.__version__} has no torch.export-based ONNX exporter with Dim.DYNAMIC "
                "(torch >= 2.6 has): upgrade torch or use --exporter torchscript"
            )
        if importlib.util.find_spec("onnxscript") is None:
            raise ExportError("the dynamo exporter needs onnxscript: pip install onnxscript")
    elif exporter == "torchscript":
        if "dynamo" in params:  # torch >= 2.5: the TorchScript path is dynamo=False
            return
        if importlib.util.find_spec("torch.onnx.utils") is None:  # pragma: no cover - future torch
            raise ExportError(
                f"torch {torch.__version__} no longer has the TorchScript ONNX exporter: use --exporter dynamo"
            )
    else:
        exporter_info(exporter)


def exporter_versions(exporter: str) -> dict[str, str]:
    """Versions of what ``exporter`` runs on (torch, and onnxscript for dynamo)."""
    out = {"torch": torch.__version__}
    if exporter == "dynamo":
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out["onnxscript"] = importlib.metadata.version("onnxscript")
    return out


@dataclass
class ExportedGraph:
    """A freshly exported graph and what the exporter said while making it."""

    proto: onnx.ModelProto
    exporter: str
    opset: int
    notes: list[str] = field(default_factory=list)
    #: exact rewrites applied to the exporter's graph (``export.rewrite``), by name: count
    rewrites: dict[str, int] = field(default_factory=dict)


def export_onnx_proto(
    model: nn.Module,
    spec: IOSpec,
    *,
    exporter: str = DEFAULT_EXPORTER,
    opset: int | None = None,
    sample_hw: tuple[int, int] = (224, 224),
    rewrite: bool = True,
) -> ExportedGraph:
    """Export ``model`` (eval mode, FP32) to an in-memory ONNX graph named by ``spec``.

    ``rewrite=False`` skips the exact rewrites of ``export.rewrite`` (for comparisons).

    Raises ``ExportOptionError`` for an opset the exporter cannot produce,
    ``ExportError`` (one line: exporter and first error line) when torch fails.
    """
    opset = resolve_opset(exporter, opset)
    check_available(exporter)
    model = model.eval()
    # batch 2: a size-1 sample dim invites torch.export to specialise it
    sample = torch.zeros(2, 3, *sample_hw)
    rewrites: dict[str, int] = {}
    with _collect_warnings() as notes:
        try:
            if exporter == "dynamo":
                proto = _export_dynamo(model, spec, sample, opset)
                if rewrite:
                    rewrites["canonical_gelu"] = canonical_gelu(proto)
            else:
                proto = _export_torchscript(model, spec, sample, opset)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"the {exporter} exporter failed: {_first_error_line(exc)}") from None
    check_dynamic(proto, spec)
    return ExportedGraph(proto, exporter, opset, notes, rewrites)


def _export_dynamo(model: nn.Module, spec: IOSpec, sample: torch.Tensor, opset: int) -> onnx.ModelProto:
    from torch.export import Dim

    (image,) = spec.inputs
    shapes = ({axis: Dim.DYNAMIC for axis in image.dynamic_axes},)
    with _quiet_torch_registry():
        program = torch.onnx.export(
            model,
            (sample,),
            None,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=spec.input_names,
            output_names=spec.output_names,
            opset_version=opset,
            verbose=False,
        )
    if program is None:  # pragma: no cover - torch always returns the program when f is None
        raise ExportError("the dynamo exporter returned no program")
    proto = program.model_proto
    _rename_dims(proto, spec)
    _name_nodes_by_module(proto)
    return proto


def _export_torchscript(model: nn.Module, spec: IOSpec, sample: torch.Tensor, opset: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        model,
        (sample,),
        buf,
        input_names=spec.input_names,
        output_names=spec.output_names,
        dynamic_axes=spec.dynamic_axes,
        opset_version=opset,
        do_constant_folding=True,
        **kwargs,
    )
    return onnx.load_from_string(buf.getvalue())


@contextlib.contextmanager
def _collect_warnings() -> Iterator[list[str]]:
    """Record warnings raised while exporting as one-line notes (deduplicated, in order)."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield notes
        finally:
            for w in caught:
                text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else w.category.__name__
                if any(re.search(pattern, text) for pattern, _ in TORCH_INTERNAL_WARNINGS):
                    continue
                line = f"{w.category.__name__}: {text[:240]}"
                if line not in notes:
                    notes.append(line)


@contextlib.contextmanager
def _quiet_torch_registry() -> Iterator[None]:
    """torch logs one line per torchvision op it cannot register when torchvision is absent: not ours."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


def _first_error_line(exc: BaseException) -> str:
    """The innermost cause's first line (torch wraps the real error in a long multi-line report)."""
    root = exc
    seen = {id(root)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(root).__name__}: {first[:240]}" if first else type(root).__name__


def _rename_dims(proto: onnx.ModelProto, spec: IOSpec) -> None:
    """Give torch's symbolic dims (``s77``...) the spec's names on every tensor of the graph.

    The input's symbols map to the spec's names (``s77`` -> ``batch``); derived dims
    inside the graph keep their formula with the names substituted
    (``((height - 1)//4) + 1``); graph outputs get exactly the spec's dim names.
    """
    (image,) = spec.inputs
    (vi,) = [i for i in proto.graph.input if i.name == image.name] or [None]
    if vi is None:
        raise ExportError(f"graph has no input {image.name!r}")
    mapping: dict[str, str] = {}
    for axis, name in image.dynamic_axes.items():
        dim = vi.type.tensor_type.shape.dim[axis]
        if dim.dim_param:
            mapping[dim.dim_param] = name
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(s) for s in sorted(mapping, key=len, reverse=True)) + r")\b")
    outputs = {t.name: t.dynamic_axes for t in spec.outputs}
    for value in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        named = outputs.get(value.name, {}) if value.name not in spec.input_names else {}
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if axis in named and (dim.dim_param or not dim.dim_value):
                dim.dim_param = named[axis]
            elif dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)


_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def _name_nodes_by_module(proto: onnx.ModelProto) -> None:
    """Name each node ``<module path>/<op>`` (unique), and drop torch's per-node debug metadata."""
    import ast

    taken: dict[str, int] = {}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        module = ""
        if _SCOPES_KEY in meta:
            with contextlib.suppress(ValueError, SyntaxError):
                scopes = ast.literal_eval(meta[_SCOPES_KEY])
                # [..., 'stages.0.blocks.0.channel_mlp2.fc1', 'linear_2']: the last is the FX node
                module = next((s for s in reversed(scopes[:-1]) if s and not s.startswith("_")), "")
        base = f"{module}/{node.op_type}" if module else node.op_type
        n = taken.get(base, 0)
        taken[base] = n + 1
        node.name = base if n == 0 else f"{base}_{n}"
        del node.metadata_props[:]


def export_onnx(
    model: nn.Module,
    spec: IOSpec,
    path: Path,
    *,
    exporter: str = DEFAULT_EXPORTER,
    opset: int | None = None,
) -> Path:
    """Export ``model`` to ``path`` (written atomically, checked with the full ONNX checker)."""
    proto = export_onnx_proto(model, spec, exporter=exporter, opset=opset).proto
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
    """Raise if a dim ``spec`` names dynamic became fixed or lost its name, or an I/O tensor is missing."""
    dims = dynamic_dims(proto)
    for t in spec.inputs + spec.outputs:
        got = dims.get(t.name)
        if got is None:
            raise ExportError(f"graph has no tensor {t.name!r} (has {', '.join(dims)})")
        for axis, name in t.dynamic_axes.items():
            if axis >= len(got) or not isinstance(got[axis], str):
                raise ExportError(f"{t.name}: dim {axis} is not dynamic in the graph ({got})")
            if got[axis] != name:
                raise ExportError(f"{t.name}: dim {axis} is named {got[axis]!r}, expected {name!r}")


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
