"""What is this model file? One reader for every artifact, one frozen record for every command.

``describe(path)`` answers it for an ONNX graph, an OpenVINO IR (``.xml`` + ``.bin``) and a
TensorRT engine with its sidecar; ``describe_variant`` for a PyTorch variant with (or without) a
checkpoint. Every command and module reads model files through these (after Polygraphy's
``ModelArgs`` and timm's ``pretrained_cfg``).

Facts a file records (``metadata.KEYS``, the sidecar) are read; facts it does not record are
inferred from the artifact itself, the same way for every format:

- precision: Q/DQ nodes (IR: FakeQuantize layers) -> ``int8``; FP16 initializers, tensors or casts
  -> ``fp16``; else ``fp32``;
- kind: one ``[batch, N]`` output -> ``classifier``; rank-4 outputs -> ``features``; anything else is
  not a ConvMLP graph (``UnsupportedModel``, exit 2);
- num_classes: the logits' second dim;
- INT8 layout: unsigned zero points -> ``cpu``, else ``tensorrt``;
- preprocessing: the variant's ImageNet config (``convmlp.PRETRAINED_CFGS``).

A record that the graph contradicts (metadata saying 10 classes on a 1000-class graph, ``fp32`` on
an FP16 graph) is ``DeployError`` naming both: the file was changed after export. The variant
cannot be read off a graph reliably, so it stays None unless recorded; commands then
ask for ``--variant``. ``ModelFacts.recorded`` names the facts the file recorded and
``inferred_line()`` says in one line which were inferred.

Submodules: ``metadata`` (the keys and their writer), ``ir`` (IR XML), ``engine`` (the sidecar),
``profiles`` (engine shape profiles).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convmlp import PRETRAINED_CFGS, VARIANTS
from convmlp.spec import io_spec
from convmlp.weights import PretrainedCfg

from ..errors import DeployError, UnsupportedModel
from ..precision import ORDER as PRECISIONS
from ..precision import canonical
from .engine import EngineManifest, read_manifest
from .ir import IR_SECTION, ir_bin_path, is_ir, read_ir
from .metadata import labels as recorded_labels
from .metadata import preprocessing
from .profiles import ShapeProfile

__all__ = [
    "FORMATS",
    "KINDS",
    "ENGINE_SUFFIXES",
    "TensorFacts",
    "ModelFacts",
    "describe",
    "describe_variant",
    "describe_model",
    "file_format",
    "is_ir",
    "ir_bin_path",
    "IR_SECTION",
]

#: what a model can be: an ONNX graph, an OpenVINO IR, a TensorRT engine, or a PyTorch variant
FORMATS = ("onnx", "ir", "engine", "pytorch", "endpoint")  # endpoint: a served model (runners.endpoint)
KINDS = ("classifier", "features")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: the facts a record can have recorded or inferred
FACTS = ("variant", "kind", "precision", "num_classes", "preprocessing", "int8_layout")

#: onnx.TensorProto element types -> numpy names
_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16", 2: "uint8", 3: "int8", 6: "int32",
                7: "int64", 9: "bool"}
_FP16, _BF16, _UINT8 = 10, 16, 2
#: how a contradiction names what the graph shows
_SAYS = {"kind": "is a", "num_classes": "outputs classes:", "precision": "computes in", "int8_layout": "has the layout"}


@dataclass(frozen=True)
class TensorFacts:
    """One input or output: numpy dtype name and dims, -1 where a dim is dynamic."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


@dataclass(frozen=True)
class ModelFacts:
    """What one model file (or PyTorch variant) is. Built by ``describe``/``describe_variant`` only."""

    path: Path | None  # None for a PyTorch variant
    format: str  # one of FORMATS
    kind: str  # classifier or features
    precision: str  # deploy.precision name: fp32, fp16, bf16, int8
    inputs: tuple[TensorFacts, ...]
    outputs: tuple[TensorFacts, ...]
    preprocessing: PretrainedCfg
    variant: str | None = None
    num_classes: int | None = None  # classifiers
    layout: str = "NCHW"
    int8_layout: str | None = None  # int8 graphs: tensorrt or cpu
    weights: str | None = None  # what the weights are: a checkpoint path or URL, synthetic(seed=N); None unknown
    checkpoint_sha256: str = ""  # of the checkpoint exported from; "" when synthetic, official or unknown
    producer: Mapping[str, str] = field(default_factory=dict)  # exporter, opset, versions; engines: TensorRT, GPU
    profiles: tuple[ShapeProfile, ...] = ()  # engines
    extra_files: tuple[str, ...] = ()  # ONNX external-data files, relative to the graph's folder
    metadata: Mapping[str, str] = field(default_factory=dict)  # what the file records, as recorded
    recorded: frozenset[str] = frozenset()  # the FACTS the file recorded (the others were inferred)
    notes: tuple[str, ...] = ()  # what a user should know about the record (an unknown variant name)
    labels: tuple[str, ...] | None = None  # class names the file records (export --labels)
    manifest: EngineManifest | None = field(default=None, repr=False)  # engines: the sidecar

    # -- derived facts -------------------------------------------------------------
    @property
    def name(self) -> str:
        """How reports name it: the file name, or ``convmlp_{variant}`` for PyTorch."""
        if self.format == "endpoint":
            return self.metadata["endpoint"]
        return self.path.name if self.path is not None else f"convmlp_{self.variant}"

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def synthetic(self) -> bool:
        """Exported from synthetic weights (``export`` without ``--weights``): classes mean nothing."""
        return (self.weights or "").startswith("synthetic")

    @property
    def max_batch(self) -> int | None:
        """The largest batch the model takes: an engine's profiles; None when the batch is dynamic."""
        if self.profiles:
            return max(p.max[0] for p in self.profiles)
        return None

    @property
    def opt_batches(self) -> tuple[int, ...]:
        """Batch sizes an engine was tuned for (profile opt); () for graphs."""
        return tuple(sorted({p.opt[0] for p in self.profiles}))

    @property
    def hw_range(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(H, W) min and max of an engine's first profile; None for graphs."""
        if not self.profiles:
            return None
        p = self.profiles[0]
        return (p.min[2], p.min[3]), (p.max[2], p.max[3])

    @property
    def inferred(self) -> tuple[str, ...]:
        """The FACTS that were not recorded but read off the artifact."""
        have = {"variant": self.variant, "int8_layout": self.int8_layout, "num_classes": self.num_classes}
        return tuple(f for f in FACTS if f not in self.recorded and have.get(f, True) is not None)

    def source(self, fact: str) -> str:
        """``recorded``, ``inferred`` or ``unknown`` for one of ``FACTS``."""
        if fact in self.recorded:
            return "recorded"
        return "inferred" if fact in self.inferred else "unknown"

    def inferred_line(self) -> str | None:
        """One line naming the facts that decide a gate or a reference (precision, kind, classes, INT8 layout)
        which were inferred; None when the file recorded them. (Preprocessing is said where it is used.)"""
        if self.format == "pytorch":
            return None
        shown = {
            "precision": f"precision {self.precision}",
            "kind": f"kind {self.kind}",
            "num_classes": f"num_classes {self.num_classes}",
            "int8_layout": f"INT8 layout {self.int8_layout}",
        }
        parts = [f"{shown[f]} (inferred)" for f in self.inferred if f in shown]
        if not parts:
            return None
        missing = "" if self.variant or "variant" in self.recorded else "; no variant recorded"
        return f"{self.name} records no metadata for these facts, read off the {self.format}: {', '.join(parts)}{missing}"

    def require_classifier(self, purpose: str) -> None:
        """``UnsupportedModel`` unless this is a classifier; ``purpose`` says what needs one."""
        if self.kind != "classifier" or self.num_classes is None:
            outs = ", ".join(self.output_names)
            raise UnsupportedModel(
                f"{self.name} is a features {self.format} (outputs {outs}): {purpose} needs a classifier"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path else None,
            "format": self.format,
            "variant": self.variant,
            "kind": self.kind,
            "precision": self.precision,
            "num_classes": self.num_classes,
            "layout": self.layout,
            "int8_layout": self.int8_layout,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "mean": list(self.preprocessing.mean),
            "std": list(self.preprocessing.std),
            "crop_pct": self.preprocessing.crop_pct,
            "input_size": list(self.preprocessing.input_size),
            "weights": self.weights,
            "checkpoint_sha256": self.checkpoint_sha256 or None,
            "producer": dict(self.producer),
            "recorded": sorted(self.recorded),
            "inferred": list(self.inferred),
            "notes": list(self.notes),
            "labels": len(self.labels) if self.labels else None,
        }


# --------------------------------------------------------------------------- the readers


def file_format(path: str | os.PathLike[str]) -> str:
    """``ir`` for ``.xml``, ``engine`` for ``.engine``/``.plan``/``.trt``, else ``onnx``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".xml":
        return "ir"
    return "engine" if suffix in ENGINE_SUFFIXES else "onnx"


def describe(path: str | os.PathLike[str], format: str | None = None) -> ModelFacts:  # noqa: A002
    """The record of the model file at ``path``.

    ``format``: ``onnx`` (an IR ``.xml`` is accepted wherever a graph is: ``--onnx`` takes both),
    ``ir`` or ``engine``; None guesses from the suffix (``file_format``). Raises ``DeployError``
    (exit 1) for a missing or unreadable file and ``UnsupportedModel`` (exit 2) for a file that is not
    a ConvMLP classifier or backbone.
    """
    p = Path(path)
    fmt = format or file_format(p)
    if fmt == "onnx" and is_ir(p):
        fmt = "ir"
    readers = {"onnx": _from_onnx, "ir": _from_ir, "engine": _from_engine}
    if fmt not in readers:
        raise ValueError(f"unknown model format {format!r}: choose one of {', '.join(readers)}")
    return readers[fmt](p)


def describe_variant(
    variant: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    features: bool = False,
) -> ModelFacts:
    """The record of a PyTorch ConvMLP-``variant`` with ``weights`` (a checkpoint: its head gives the
    class count), the official ones (``pretrained``) or synthetic ones. Reads the checkpoint's head and
    builds no model; ``UnsupportedModel`` when ``num_classes`` contradicts the head."""
    from convmlp import synthetic_label
    from convmlp.weights import file_sha256, head_classes, read_checkpoint

    v = _known_variant(variant)
    if v is None:
        raise UnsupportedModel(f"unknown ConvMLP variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    sha, label = "", synthetic_label(0)
    if weights is not None:
        head = None if features else head_classes(read_checkpoint(weights))
        if head is not None and num_classes is not None and head != num_classes:
            raise UnsupportedModel(f"--weights {weights} has a {head}-class head, not {num_classes} classes")
        num_classes = num_classes or head
        sha, label = file_sha256(weights), str(weights)
    elif pretrained:
        label = PRETRAINED_CFGS[v].url
    return _torch_facts(v, features, None if features else (num_classes or 1000), label, sha)


def describe_model(model: Any) -> ModelFacts:
    """The record of a ConvMLP built by ``convmlp.create_model`` (variant, head, where its weights came from)."""
    features = bool(getattr(model, "features_only", False))
    return _torch_facts(model.variant, features, None if features else int(model.num_classes),
                        getattr(model, "weights_source", None), getattr(model, "checkpoint_sha256", None) or "")


def _torch_facts(variant: str, features: bool, num_classes: int | None, weights: str | None, sha: str) -> ModelFacts:
    spec = io_spec(variant, features=features, num_classes=num_classes or 1000)
    image = TensorFacts(spec.input_names[0], "float32", (-1, 3, -1, -1))
    outputs = tuple(TensorFacts(t.name, "float32", tuple(d if isinstance(d, int) else -1 for d in t.dims))
                    for t in spec.outputs)
    return ModelFacts(
        path=None, format="pytorch", kind=spec.kind, precision="fp32", inputs=(image,), outputs=outputs,
        preprocessing=PRETRAINED_CFGS[variant], variant=variant, num_classes=num_classes, weights=weights,
        checkpoint_sha256=sha, recorded=frozenset(FACTS),
    )


def _known_variant(name: str | None) -> str | None:
    v = (name or "").strip().lower().removeprefix("convmlp_").removeprefix("convmlp-")
    return v if v in VARIANTS else None


def _unreadable(path: Path, what: str, exc: BaseException) -> DeployError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return DeployError(f"{path}: not a readable {what} ({first})")


def _from_onnx(path: Path) -> ModelFacts:
    import onnx
    from onnx.external_data_helper import uses_external_data

    if not path.is_file():
        raise DeployError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise _unreadable(path, "ONNX model", exc) from None
    graph = proto.graph
    if not graph.node:
        raise DeployError(f"{path}: not a readable ONNX model (empty graph)")
    initializers = {t.name for t in graph.initializer}

    def tensor(vi: Any) -> TensorFacts:
        t = vi.type.tensor_type
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorFacts(vi.name, _ONNX_DTYPES.get(t.elem_type, f"onnx-type-{t.elem_type}"), dims)

    inputs = tuple(tensor(i) for i in graph.input if i.name not in initializers)
    outputs = tuple(tensor(o) for o in graph.output)
    ops = {n.op_type for n in graph.node}
    casts = {a.i for n in graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    types = {t.data_type for t in graph.initializer} | casts | {
        v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.output)
    }
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        precision = "int8"
    else:
        precision = "fp16" if _FP16 in types else "bf16" if _BF16 in types else "fp32"
    int8_layout = None
    if precision == "int8":
        zero_points = {n.input[2] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
        unsigned = any(t.data_type == _UINT8 for t in graph.initializer if t.name in zero_points)
        int8_layout = "cpu" if unsigned else "tensorrt"
    extra = sorted({e.value for t in graph.initializer if uses_external_data(t) for e in t.external_data
                    if e.key == "location"})
    meta = {p.key: p.value for p in proto.metadata_props}
    return _graph_facts(path, "onnx", meta, inputs, outputs, precision, int8_layout, tuple(extra))


def _from_ir(path: Path) -> ModelFacts:
    info = read_ir(path)
    inputs = tuple(TensorFacts(t.name, t.dtype, t.dims) for t in info.inputs)
    outputs = tuple(TensorFacts(t.name, t.dtype, t.dims) for t in info.outputs)
    precision = "int8" if info.layers.get("FakeQuantize") else "fp32"
    return _graph_facts(info.path, "ir", info.metadata, inputs, outputs, precision, None, ())


def _graph_facts(
    path: Path, fmt: str, meta: Mapping[str, str], inputs: tuple[TensorFacts, ...],
    outputs: tuple[TensorFacts, ...], precision: str, int8_layout: str | None, extra: tuple[str, ...],
) -> ModelFacts:
    """The record of a graph (ONNX or IR): its structure, with what ``meta`` records checked against it."""
    what = "ONNX graph" if fmt == "onnx" else "OpenVINO IR"
    if len(inputs) != 1 or len(inputs[0].dims) != 4:
        found = ", ".join(f"{t.name} {list(t.dims)}" for t in inputs) or "none"
        raise UnsupportedModel(f"{path.name}: a ConvMLP {what} has one NCHW image input, found {found}")
    kind, num_classes = _structure(path, what, outputs)
    recorded: set[str] = set()
    notes: list[str] = []

    def check(fact: str, graph_value: Any, parse: Any = str) -> Any:
        """``graph_value``, after checking that the record of ``fact`` (if any) agrees with it; the record
        where the artifact cannot tell (an IR's INT8 layout)."""
        if not meta.get(fact):
            return graph_value
        try:
            value = parse(meta[fact])
        except ValueError:
            value = None
        if graph_value is None and value is not None:
            recorded.add(fact)
            return value
        if value != graph_value:
            raise DeployError(f"{path.name}: its metadata says {fact}={meta[fact]} but the {what} itself "
                              f"{_SAYS[fact]} {graph_value}: fix or remove that metadata")
        recorded.add(fact)
        return graph_value

    kind = check("kind", kind)
    if kind == "classifier":  # a backbone's record names its classifier's head, which it does not have
        num_classes = check("num_classes", num_classes, int)
    precision = check("precision", precision, canonical)
    if precision == "int8":
        int8_layout = check("int8_layout", int8_layout)
    variant = _known_variant(meta.get("variant"))
    if variant:
        recorded.add("variant")
    elif meta.get("variant"):
        notes.append(f"{path.name}: its metadata names variant {meta['variant']!r}, which is not one of "
                     f"{', '.join(VARIANTS)}: ignored")
    cfg, has_norm = preprocessing(PRETRAINED_CFGS[variant or "s"], meta)
    if has_norm:
        recorded.add("preprocessing")
    producer = {k: meta[k] for k in ("exporter", "opset", "exporter_versions", "producer_versions", "quantizer",
                                     "openvino_version", "source_onnx") if meta.get(k)}
    names = recorded_labels(meta) if kind == "classifier" else None
    if names is not None and len(names) != num_classes:
        raise DeployError(f"{path.name}: its metadata lists {len(names)} labels but the {what} outputs {num_classes} "
                          "classes: fix or remove that metadata")
    return ModelFacts(
        path=path, format=fmt, kind=kind, precision=precision, inputs=inputs, outputs=outputs,
        preprocessing=cfg, variant=variant, num_classes=num_classes, layout=meta.get("input_layout") or "NCHW",
        int8_layout=int8_layout if precision == "int8" else None, weights=meta.get("weights") or None,
        checkpoint_sha256=meta.get("checkpoint_sha256", ""), producer=producer, extra_files=extra,
        metadata=dict(meta), recorded=frozenset(recorded), notes=tuple(notes), labels=names,
    )


def _structure(path: Path, what: str, outputs: Sequence[TensorFacts]) -> tuple[str, int | None]:
    """Kind and class count read off the outputs; ``UnsupportedModel`` for anything ConvMLP never outputs."""
    found = ", ".join(f"{t.name} {list(t.dims)}" for t in outputs) or "no output"
    if len(outputs) == 1 and len(outputs[0].dims) == 2:
        classes = outputs[0].dims[1]
        if classes < 1:
            raise UnsupportedModel(f"{path.name}: the {what}'s output {found} has no fixed class count")
        return "classifier", classes
    if _is_backbone(outputs):
        return "features", None
    if any(len(t.dims) == 4 for t in outputs):
        raise UnsupportedModel(
            f"{path.name}: the {what} outputs {found}; a ConvMLP backbone outputs the 4 feature maps f1..f4 "
            f"(channels {' or '.join(str(list(c)) for c in dict.fromkeys(_feature_channels().values()))}): "
            "this is not one"
        )
    raise UnsupportedModel(
        f"{path.name}: the {what} outputs {found}; a ConvMLP classifier outputs [batch, classes] "
        "and its backbone rank-4 feature maps"
    )


def _feature_channels() -> dict[str, tuple[int, ...]]:
    """The channels of f1..f4 per variant (the backbone's ``io_spec``)."""
    return {v: tuple(int(t.dims[1]) for t in io_spec(v, features=True).outputs) for v in VARIANTS}


def _is_backbone(outputs: Sequence[TensorFacts]) -> bool:
    """The F1..F4 outputs of a ConvMLP backbone: exactly 4 rank-4 maps whose channels are one variant's
    (or, where a graph leaves channels dynamic, named f1..f4). Any other rank-4 output is not ConvMLP's."""
    if len(outputs) != 4 or any(len(t.dims) != 4 for t in outputs):
        return False
    channels = tuple(t.dims[1] for t in outputs)
    if all(isinstance(c, int) and c > 0 for c in channels):
        return channels in _feature_channels().values()
    return [t.name.lower() for t in outputs] == ["f1", "f2", "f3", "f4"]


def _from_engine(path: Path) -> ModelFacts:
    if not path.is_file():
        raise DeployError(f"engine not found: {path}")
    m = read_manifest(path)
    try:
        precision = canonical(m.precision)
    except ValueError:
        precision = None
    if precision not in PRECISIONS:
        raise DeployError(f"{path}: its manifest says precision {m.precision!r}, not one of {', '.join(PRECISIONS)}")
    variant = _known_variant(m.variant)
    if m.kind == "classifier":
        if not m.num_classes or int(m.num_classes) < 1 or len(m.output_names) != 1:
            raise DeployError(f"{path}: manifest of a classifier engine needs one output and num_classes")
        outputs: tuple[TensorFacts, ...] = (TensorFacts(m.output_names[0], "float32", (-1, int(m.num_classes))),)
    elif m.kind == "features":
        if variant is None:
            raise DeployError(f"{path}: manifest of a features engine names no variant")
        spec = {t.name: t for t in io_spec(variant, features=True).outputs}
        missing = [n for n in m.output_names if n not in spec]
        if missing:
            raise DeployError(f"{path}: manifest outputs {missing} are not ConvMLP feature maps")
        outputs = tuple(TensorFacts(n, "float32", (-1, int(spec[n].dims[1]), -1, -1)) for n in m.output_names)
    else:
        raise DeployError(f"{path}: manifest kind {m.kind!r} is neither classifier nor features")
    cfg, has_norm = preprocessing(PRETRAINED_CFGS[variant or "s"], m.metadata)
    names = recorded_labels(m.metadata) if m.kind == "classifier" else None
    if names is not None and len(names) != int(m.num_classes):
        raise DeployError(f"{path}: its manifest lists {len(names)} labels for {m.num_classes} classes: "
                          "fix or remove that metadata")
    recorded = {"kind", "precision"} | ({"num_classes"} if m.kind == "classifier" else set())
    recorded |= {"variant"} if variant else set()
    recorded |= {"preprocessing"} if has_norm else set()
    producer = {"tensorrt_version": m.tensorrt_version, "gpu_name": m.gpu_name,
                "compute_capability": m.compute_capability, "cuda_version": m.cuda_version}
    return ModelFacts(
        path=path, format="engine", kind=m.kind, precision=precision,
        inputs=(TensorFacts(m.input_name, "float32", (-1, 3, -1, -1)),), outputs=outputs, preprocessing=cfg,
        variant=variant, num_classes=int(m.num_classes) if m.kind == "classifier" and m.num_classes else None,
        int8_layout="tensorrt" if precision == "int8" else None, weights=m.metadata.get("weights") or None,
        checkpoint_sha256=m.checkpoint_sha256, producer=producer, profiles=tuple(m.profiles),
        metadata=dict(m.metadata), recorded=frozenset(recorded), manifest=m, labels=names,
    )
