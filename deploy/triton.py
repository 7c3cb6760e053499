"""Triton Inference Server model repository entries for ConvMLP engines and ONNX graphs.

``write_model_entry`` lays out ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.plan``
(platform ``tensorrt_plan``), ``REPO/NAME/1/model.onnx``, served by Triton's
onnxruntime backend (platform ``onnxruntime_onnx``, GPU or CPU instances) or by its
OpenVINO backend (``backend: "openvino"``, CPU instances), or an OpenVINO IR as
``REPO/NAME/1/model.xml`` + ``model.bin`` (OpenVINO backend).
Every fact in the config is read from the model itself: the ONNX graph and its
``metadata_props``, the IR and its ``rt_info`` (``deploy.ir``), or the engine's
sidecar manifest (``deploy.trt.manifest``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convmlp import __version__
from convmlp.spec import io_spec

from .artifacts import stage_bytes, stage_copy
from .errors import DeployError
from .ir import IRTensor, ir_bin_path, is_ir, read_ir

__all__ = [
    "TritonOptionError",
    "TensorConfig",
    "ModelFacts",
    "TritonOptions",
    "ModelEntry",
    "read_onnx_facts",
    "read_ir_facts",
    "read_graph_facts",
    "read_engine_facts",
    "read_model_facts",
    "resolve_options",
    "render_config",
    "write_model_entry",
    "check_schema",
    "DEFAULT_ONNX_MAX_BATCH",
]

#: max_batch_size for an ONNX entry when none is given (the graph's batch axis is dynamic)
DEFAULT_ONNX_MAX_BATCH = 32
DEFAULT_QUEUE_DELAY_US = 100

#: model file kind -> (Triton platform, file name in the version folder); an IR has no platform (backend only)
_PLATFORMS = {
    "tensorrt": ("tensorrt_plan", "model.plan"),
    "onnx": ("onnxruntime_onnx", "model.onnx"),
    "ir": ("", "model.xml"),
}
#: every model file name an entry may hold (others are removed when an entry changes kind)
_MODEL_FILES = ("model.plan", "model.onnx", "model.xml", "model.bin")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# onnx.TensorProto element types -> Triton data types
_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16", 6: "TYPE_INT32", 7: "TYPE_INT64"}
_NUMPY_TO_TRITON = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int32": "TYPE_INT32",
                    "int64": "TYPE_INT64"}


class TritonOptionError(ValueError):
    """An option does not fit the model (CLI exit code 2)."""


@dataclass(frozen=True)
class TensorConfig:
    """One input or output of a Triton config: dims without the batch axis, -1 = dynamic."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelFacts:
    """What a model file says about itself, as far as Triton cares."""

    path: Path
    backend: str  # "tensorrt", "onnx" or "ir" (OpenVINO IR)
    kind: str  # "classifier" or "features"
    variant: str | None
    num_classes: int | None
    precision: str | None
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    #: the largest batch the model accepts (engine profiles), None if unbounded
    max_batch: int | None = None
    #: batch sizes the engine was tuned for (profile opt), empty for ONNX
    opt_batches: tuple[int, ...] = ()
    #: (H, W) min and max of the engine's first profile, None for ONNX
    hw_range: tuple[tuple[int, int], tuple[int, int]] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: extra files (ONNX external data) to copy beside the model file, relative to ``path.parent``
    extra_files: tuple[str, ...] = ()

    @property
    def platform(self) -> str:
        return _PLATFORMS[self.backend][0]

    @property
    def model_filename(self) -> str:
        return _PLATFORMS[self.backend][1]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def files(self) -> list[tuple[Path, str]]:
        """(source file, name in the version folder) of everything the entry serves."""
        out = [(self.path, self.model_filename)]
        if self.backend == "ir":
            out.append((ir_bin_path(self.path), "model.bin"))
        return out + [(self.path.parent / rel, rel) for rel in self.extra_files]

    def default_name(self, runtime: str | None = None) -> str:
        kind = "_features" if self.kind == "features" else ""
        served_by = runtime or _RUNTIME[self.backend]
        suffix = {"tensorrt": "trt", "openvino": "openvino"}.get(served_by, "onnx")
        return f"convmlp_{self.variant or 'model'}{kind}_{suffix}"


@dataclass(frozen=True)
class TritonOptions:
    """Serving choices for one model entry."""

    model_name: str
    max_batch_size: int
    instances: int = 1
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    #: Triton backend serving the file: "tensorrt", "onnxruntime" or "openvino"
    runtime: str = "onnxruntime"
    #: "gpu" or "cpu" (KIND_GPU / KIND_CPU)
    instance_kind: str = "gpu"
    #: class-name file to copy beside the config (``label_filename`` of the first output)
    labels: Path | None = None
    #: backend parameters (OpenVINO: NUM_STREAMS, INFERENCE_NUM_THREADS, PERFORMANCE_HINT...)
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """A written repository entry."""

    repository: Path
    model_name: str
    config_path: Path
    model_path: Path
    facts: ModelFacts
    options: TritonOptions

    def to_dict(self) -> dict[str, Any]:
        f, o = self.facts, self.options
        return {
            "repository": str(self.repository),
            "model_name": self.model_name,
            "config": str(self.config_path),
            "model_file": str(self.model_path),
            "platform": f.platform if o.runtime != "openvino" else None,
            "backend": o.runtime,
            "instance_kind": o.instance_kind,
            "labels": str(o.labels) if o.labels else None,
            "parameters": dict(o.parameters),
            "source": str(f.path),
            "variant": f.variant,
            "kind": f.kind,
            "precision": f.precision,
            "max_batch_size": o.max_batch_size,
            "instances": o.instances,
            "dynamic_batching": o.dynamic_batching,
            "preferred_batch_sizes": list(o.preferred_batch_sizes),
            "inputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in f.inputs],
            "outputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in f.outputs],
        }


# --------------------------------------------------------------------------- reading models


def _onnx_dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def read_onnx_facts(path: str | os.PathLike[str]) -> ModelFacts:
    """Names, dtypes and dims from the ONNX graph; variant/kind/classes from ``metadata_props``.

    Raises ``DeployError`` for an unreadable graph, a fixed batch axis, or metadata
    that contradicts the graph.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    if not path.is_file():
        raise DeployError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DeployError(f"{path}: not a readable ONNX model ({first[:160]})") from None
    graph = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    if len(real_inputs) != 1:
        raise DeployError(f"{path}: expected one image input, found {len(real_inputs)}")

    def tensor(vi: Any, what: str) -> TensorConfig:
        elem = vi.type.tensor_type.elem_type
        if elem not in _ONNX_TO_TRITON:
            raise DeployError(f"{path}: {what} {vi.name!r} has unsupported element type {elem}")
        dims = _onnx_dims(vi)
        if not dims:
            raise DeployError(f"{path}: {what} {vi.name!r} has no shape")
        if isinstance(dims[0], int):
            raise DeployError(
                f"{path}: {what} {vi.name!r} has a fixed batch axis ({dims[0]}); export with a dynamic batch"
            )
        return TensorConfig(vi.name, _ONNX_TO_TRITON[elem], tuple(d if isinstance(d, int) else -1 for d in dims[1:]))

    inputs = (tensor(real_inputs[0], "input"),)
    outputs = tuple(tensor(o, "output") for o in graph.output)
    extra = sorted(
        {
            e.value
            for t in graph.initializer
            if uses_external_data(t)
            for e in t.external_data
            if e.key == "location"
        }
    )
    return _graph_facts(path, "onnx", meta, inputs, outputs, tuple(extra))


def read_ir_facts(path: str | os.PathLike[str]) -> ModelFacts:
    """``read_onnx_facts`` for an OpenVINO IR (``.xml`` + ``.bin`` from ``export --openvino``)."""
    info = read_ir(path)
    if len(info.inputs) != 1:
        raise DeployError(f"{info.path}: expected one image input, found {len(info.inputs)}")

    def tensor(t: IRTensor, what: str) -> TensorConfig:
        if t.dtype not in _NUMPY_TO_TRITON:
            raise DeployError(f"{info.path}: {what} {t.name!r} has unsupported element type {t.dtype}")
        if not t.dims:
            raise DeployError(f"{info.path}: {what} {t.name!r} has no shape")
        if t.dims[0] != -1:
            raise DeployError(
                f"{info.path}: {what} {t.name!r} has a fixed batch axis ({t.dims[0]}); export with a dynamic batch"
            )
        return TensorConfig(t.name, _NUMPY_TO_TRITON[t.dtype], t.dims[1:])

    inputs = (tensor(info.inputs[0], "input"),)
    outputs = tuple(tensor(o, "output") for o in info.outputs)
    return _graph_facts(info.path, "ir", {**info.metadata, "precision": info.precision}, inputs, outputs, ())


def read_graph_facts(path: str | os.PathLike[str]) -> ModelFacts:
    """``read_ir_facts`` for an IR ``.xml``, ``read_onnx_facts`` otherwise."""
    return read_ir_facts(path) if is_ir(path) else read_onnx_facts(path)


def _graph_facts(
    path: Path, backend: str, meta: dict[str, str], inputs: tuple[TensorConfig, ...],
    outputs: tuple[TensorConfig, ...], extra: tuple[str, ...],
) -> ModelFacts:
    """Kind, classes and variant of a graph (ONNX or IR) from its metadata, checked against its outputs."""
    names = [o.name for o in outputs]
    kind = meta.get("kind") or ("classifier" if len(outputs) == 1 else "features")
    if kind not in ("classifier", "features"):
        raise DeployError(f"{path}: metadata kind={kind!r} is neither 'classifier' nor 'features'")
    num_classes: int | None = None
    if kind == "classifier":
        if len(outputs) != 1 or len(outputs[0].dims) != 1 or outputs[0].dims[0] < 1:
            raise DeployError(f"{path}: a classifier needs one [batch, classes] output, found {names}")
        num_classes = outputs[0].dims[0]
        if "num_classes" in meta and meta["num_classes"] != str(num_classes):
            raise DeployError(
                f"{path}: metadata says num_classes={meta['num_classes']} but the graph outputs {num_classes}"
            )
    return ModelFacts(
        path=path,
        backend=backend,
        kind=kind,
        variant=meta.get("variant") or None,
        num_classes=num_classes,
        precision=meta.get("precision"),
        inputs=inputs,
        outputs=outputs,
        metadata=meta,
        extra_files=extra,
    )


def read_engine_facts(path: str | os.PathLike[str]) -> ModelFacts:
    """Facts of a TensorRT engine from its sidecar ``<engine>.json`` (``deploy.trt.manifest``).

    I/O is float32 (engines are built from float32-I/O ONNX graphs); feature-map
    channels come from ``convmlp.spec.io_spec``.
    """
    from .trt.manifest import max_batch, read_manifest

    path = Path(path)
    if not path.is_file():
        raise DeployError(f"engine not found: {path}")
    try:
        m = read_manifest(path)
    except DeployError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployError(f"{path}: unusable engine manifest ({exc})") from None
    variant = getattr(m, "variant", None)
    kind = getattr(m, "kind", "classifier")
    out_names = list(m.output_names)
    num_classes = getattr(m, "num_classes", None)
    if kind == "classifier":
        if num_classes is None or int(num_classes) < 1:
            raise DeployError(f"{path}: manifest of a classifier engine has no num_classes")
        if len(out_names) != 1:
            raise DeployError(f"{path}: manifest lists outputs {out_names} for a classifier")
        outputs: tuple[TensorConfig, ...] = (TensorConfig(out_names[0], "TYPE_FP32", (int(num_classes),)),)
    else:
        if variant is None:
            raise DeployError(f"{path}: manifest of a features engine names no variant")
        spec = {t.name: t for t in io_spec(variant, features=True).outputs}
        missing = [n for n in out_names if n not in spec]
        if missing:
            raise DeployError(f"{path}: manifest outputs {missing} are not ConvMLP feature maps")
        outputs = tuple(TensorConfig(n, "TYPE_FP32", (int(spec[n].dims[1]), -1, -1)) for n in out_names)
    profiles = list(m.profiles)
    if not profiles:
        raise DeployError(f"{path}: manifest lists no optimization profiles")
    p0 = profiles[0]
    hw = ((int(p0.min[2]), int(p0.min[3])), (int(p0.max[2]), int(p0.max[3])))
    meta = {
        k: str(getattr(m, k))
        for k in ("tensorrt_version", "gpu_name", "compute_capability", "cuda_version")
        if getattr(m, k, None) is not None
    }
    return ModelFacts(
        path=path,
        backend="tensorrt",
        kind=kind,
        variant=variant,
        num_classes=int(num_classes) if kind == "classifier" and num_classes is not None else None,
        precision=getattr(m, "precision", None),
        inputs=(TensorConfig(m.input_name, "TYPE_FP32", (3, -1, -1)),),
        outputs=outputs,
        max_batch=int(max_batch(m)),
        opt_batches=tuple(sorted({int(p.opt[0]) for p in profiles})),
        hw_range=hw,
        metadata=meta,
    )


def read_model_facts(*, engine: str | os.PathLike[str] | None = None, onnx: str | os.PathLike[str] | None = None) -> ModelFacts:
    """``read_engine_facts`` or ``read_graph_facts`` (ONNX or OpenVINO IR), whichever file is given."""
    if (engine is None) == (onnx is None):
        raise ValueError("give exactly one of engine or onnx")
    return read_engine_facts(engine) if engine is not None else read_graph_facts(onnx)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- options and config


RUNTIMES = ("tensorrt", "onnxruntime", "openvino")
#: model file kind -> the Triton backends that serve it (the first is the default)
_SERVES = {"tensorrt": ("tensorrt",), "onnx": ("onnxruntime", "openvino"), "ir": ("openvino",)}
_RUNTIME = {k: v[0] for k, v in _SERVES.items()}
_DESCRIBE = {"tensorrt": "a TensorRT engine", "onnx": "an ONNX graph", "ir": "an OpenVINO IR"}
INSTANCE_KINDS = ("gpu", "cpu")


def resolve_options(
    facts: ModelFacts,
    *,
    model_name: str | None = None,
    max_batch_size: int | None = None,
    instances: int = 1,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    runtime: str | None = None,
    instance_kind: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    streams: int | None = None,
) -> TritonOptions:
    """Fill defaults from the model and refuse options it cannot serve (``TritonOptionError``).

    Defaults: runtime ``tensorrt`` for engines, ``onnxruntime`` for ONNX; instances
    ``gpu`` except with OpenVINO (CPU only); name ``convmlp_{variant}[_features]_{trt|onnx|openvino}``;
    max batch the engine's profile maximum (ONNX: 32); preferred sizes the engine's
    opt batch and the max batch. ``threads``/``streams`` are OpenVINO parameters.
    """
    runtime = runtime or _RUNTIME[facts.backend]
    if runtime not in RUNTIMES:
        raise TritonOptionError(f"unknown Triton backend {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime not in _SERVES[facts.backend]:
        raise TritonOptionError(
            f"--backend {runtime} does not serve {_DESCRIBE[facts.backend]} (use --backend "
            f"{' or '.join(_SERVES[facts.backend])})"
        )
    kind = instance_kind or ("cpu" if runtime == "openvino" else "gpu")
    if kind not in INSTANCE_KINDS:
        raise TritonOptionError(f"--instance-kind must be gpu or cpu, not {kind!r}")
    if runtime == "tensorrt" and kind != "gpu":
        raise TritonOptionError("a TensorRT engine runs on the GPU only: drop --instance-kind cpu")
    if runtime == "openvino" and kind != "cpu":
        raise TritonOptionError("Triton's OpenVINO backend runs on the CPU: use --instance-kind cpu")
    params: list[tuple[str, str]] = []
    if threads is not None or streams is not None:
        if runtime != "openvino":
            raise TritonOptionError("--threads and --streams are OpenVINO backend parameters (--backend openvino)")
        if threads is not None:
            if threads < 1:
                raise TritonOptionError(f"--threads must be >= 1, got {threads}")
            params.append(("INFERENCE_NUM_THREADS", str(threads)))
        if streams is not None:
            if streams < 1:
                raise TritonOptionError(f"--streams must be >= 1, got {streams}")
            params.append(("NUM_STREAMS", str(streams)))
    if runtime == "openvino":
        params.append(("PERFORMANCE_HINT", "THROUGHPUT" if (streams or 1) > 1 else "LATENCY"))
    label_path = None
    if labels is not None:
        label_path = Path(labels)
        if facts.kind != "classifier" or facts.num_classes is None:
            raise TritonOptionError("--labels applies to a classifier (this model outputs features)")
        _check_labels(label_path, facts.num_classes)
    name = model_name or facts.default_name(runtime)
    if not _NAME_RE.match(name):
        raise TritonOptionError(f"model name {name!r}: use letters, digits, '_', '-' and '.' only")
    limit = facts.max_batch
    if max_batch_size is None:
        max_batch_size = limit if limit is not None else DEFAULT_ONNX_MAX_BATCH
    if max_batch_size < 1:
        raise TritonOptionError(f"--max-batch-size must be >= 1, got {max_batch_size}")
    if limit is not None and max_batch_size > limit:
        raise TritonOptionError(
            f"--max-batch-size {max_batch_size} is above the engine's largest profile batch ({limit}); "
            "rebuild the engine with a larger profile or ask for less"
        )
    if instances < 1:
        raise TritonOptionError(f"--instances must be >= 1, got {instances}")
    preferred = tuple(sorted(set(int(b) for b in preferred_batch_sizes)))
    if preferred and not dynamic_batching:
        raise TritonOptionError("--preferred-batch-sizes needs dynamic batching")
    bad = [b for b in preferred if b < 1 or b > max_batch_size]
    if bad:
        raise TritonOptionError(
            f"preferred batch size(s) {', '.join(map(str, bad))} not in 1..{max_batch_size} (max batch size)"
        )
    if dynamic_batching and not preferred and facts.opt_batches:
        preferred = tuple(sorted({b for b in facts.opt_batches if b <= max_batch_size} | {max_batch_size}))
    if max_queue_delay_us < 0:
        raise TritonOptionError(f"max queue delay must be >= 0, got {max_queue_delay_us}")
    return TritonOptions(name, max_batch_size, instances, dynamic_batching, preferred, max_queue_delay_us,
                         runtime, kind, label_path, tuple(params))


LABELS_FILE = "labels.txt"


def _check_labels(path: Path, num_classes: int) -> None:
    """One non-empty class name per line, exactly ``num_classes`` of them (``TritonOptionError``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TritonOptionError(f"--labels {path}: cannot read it as UTF-8 text ({exc})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != num_classes:
        raise TritonOptionError(f"--labels {path}: {len(lines)} lines but the model has {num_classes} classes")


def _tensor_block(t: TensorConfig, label_filename: str | None = None) -> str:
    dims = ", ".join(str(d) for d in t.dims)
    label = f'\n    label_filename: "{label_filename}"' if label_filename else ""
    return f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {dims} ]{label}\n  }}'


def render_config(facts: ModelFacts, opts: TritonOptions) -> str:
    """The ``config.pbtxt`` text (Triton ``ModelConfig`` protobuf text format)."""
    head = [f"# Written by convmlp-deploy {__version__} from {facts.path.name}"]
    desc = ", ".join(
        f"{k}={v}" for k, v in (("variant", facts.variant), ("kind", facts.kind), ("precision", facts.precision)) if v
    )
    if desc:
        head.append(f"# {desc}")
    if facts.backend == "tensorrt":
        trt = facts.metadata.get("tensorrt_version", "unknown")
        gpu = facts.metadata.get("gpu_name", "unknown GPU")
        head.append(f"# Built with TensorRT {trt} on {gpu}: serve it with a Triton image carrying TensorRT {trt}.")
        if facts.hw_range:
            (h0, w0), (h1, w1) = facts.hw_range
            head.append(f"# Input height x width must lie within {h0}x{w0} .. {h1}x{w1} (engine profile).")
    if opts.runtime == "openvino":
        serve = ['backend: "openvino"', f'default_model_filename: "{facts.model_filename}"']
    else:
        serve = [f'platform: "{facts.platform}"']
    labels = LABELS_FILE if opts.labels is not None else None
    lines = head + [
        f'name: "{opts.model_name}"',
        *serve,
        f"max_batch_size: {opts.max_batch_size}",
        "input [",
        ",\n".join(_tensor_block(t) for t in facts.inputs),
        "]",
        "output [",
        ",\n".join(_tensor_block(t, labels if i == 0 else None) for i, t in enumerate(facts.outputs)),
        "]",
        "instance_group [",
        f"  {{\n    count: {opts.instances}\n    kind: KIND_{opts.instance_kind.upper()}\n  }}",
        "]",
    ]
    for key, value in opts.parameters:
        lines.append(f'parameters: {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}')
    if opts.dynamic_batching:
        lines.append("dynamic_batching {")
        if opts.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, opts.preferred_batch_sizes))} ]")
        lines.append(f"  max_queue_delay_microseconds: {opts.max_queue_delay_us}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def check_schema(config_text: str) -> bool:
    """Parse ``config_text`` with Triton's own ``ModelConfig`` protobuf when tritonclient is installed.

    Returns False when it is not (nothing to check with); raises ``DeployError`` for a
    config Triton would refuse to parse.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return False
    try:
        text_format.Parse(config_text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise DeployError(f"the config.pbtxt written would not parse as Triton's ModelConfig: {exc}") from None
    return True


# --------------------------------------------------------------------------- writing


def write_model_entry(facts: ModelFacts, opts: TritonOptions, repository: str | os.PathLike[str]) -> ModelEntry:
    """Write ``repository/NAME/config.pbtxt`` and ``repository/NAME/1/<model file>``.

    Every file is first copied to a temporary name beside its target and renamed
    only once all copies succeeded, so a failure leaves an existing entry as it was.
    Raises ``TritonOptionError`` when ``repository`` is an existing file.
    """
    repo = Path(repository)
    if repo.exists() and not repo.is_dir():
        raise TritonOptionError(f"--repository {repo} is a file, not a folder")
    entry = repo / opts.model_name
    if entry.exists() and not entry.is_dir():
        raise TritonOptionError(f"{entry} exists and is a file, not a model folder")
    version = entry / "1"
    created = not entry.exists()
    version.mkdir(parents=True, exist_ok=True)
    config_text = render_config(facts, opts)
    check_schema(config_text)
    staged: list[tuple[Path, Path]] = []
    done = False
    try:
        for src, name in facts.files():
            dst = version / name
            if not src.is_file():
                raise DeployError(f"{src}: file not found (needed by {facts.path.name})")
            dst.parent.mkdir(parents=True, exist_ok=True)
            staged.append((stage_copy(src, dst), dst))
        if opts.labels is not None:
            staged.append((stage_copy(opts.labels, entry / LABELS_FILE), entry / LABELS_FILE))
        staged.append((stage_bytes(config_text.encode(), entry / "config.pbtxt"), entry / "config.pbtxt"))
        for tmp, dst in staged:
            os.replace(tmp, dst)
        done = True
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if created and not done:
            shutil.rmtree(entry, ignore_errors=True)
    if opts.labels is None:  # a class-name file of an earlier entry no config points at any more
        (entry / LABELS_FILE).unlink(missing_ok=True)
    # a model file of another kind left from an earlier entry would confuse readers
    for other in _MODEL_FILES:
        if other not in {name for _, name in facts.files()}:
            (version / other).unlink(missing_ok=True)
    return ModelEntry(repo, opts.model_name, entry / "config.pbtxt", version / facts.model_filename, facts, opts)
