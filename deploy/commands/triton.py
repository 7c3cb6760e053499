"""Triton Inference Server model repository entries for ConvMLP engines and ONNX graphs.

``write_model_entry`` lays out ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.plan``
(platform ``tensorrt_plan``), ``REPO/NAME/1/model.onnx``, served by Triton's
onnxruntime backend (platform ``onnxruntime_onnx``, GPU or CPU instances) or by its
OpenVINO backend (``backend: "openvino"``, CPU instances), or an OpenVINO IR as
``REPO/NAME/1/model.xml`` + ``model.bin`` (OpenVINO backend).
Every fact in the config comes from the model's record (``deploy.modelfile.describe``):
names, dtypes and dims from the graph, IR or sidecar, classes from the logits' width.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convmlp import __version__

from ..artifacts import stage_bytes, stage_copy
from ..backends import BACKENDS, READS_IR, Backend
from ..errors import DeployError, OptionError, words
from ..modelfile import ModelFacts, TensorFacts, describe, ir_bin_path
from ..modelfile.metadata import read_labels
from ..precision import AUTO, canonical

__all__ = [
    "TritonOptionError",
    "TensorConfig",
    "TritonModel",
    "TritonOptions",
    "ModelEntry",
    "triton_model",
    "resolve_options",
    "render_config",
    "write_model_entry",
    "write_triton_entry",
    "check_schema",
    "DEFAULT_ONNX_MAX_BATCH",
]

#: max_batch_size for an ONNX entry when none is given (the graph's batch axis is dynamic)
DEFAULT_ONNX_MAX_BATCH = 32
DEFAULT_QUEUE_DELAY_US = 100

#: model file format -> (Triton platform, file name in the version folder); an IR has no platform (backend only)
_PLATFORMS = {
    "engine": ("tensorrt_plan", "model.plan"),
    "onnx": ("onnxruntime_onnx", "model.onnx"),
    "ir": ("", "model.xml"),
}
#: every model file name an entry may hold (others are removed when an entry changes kind)
_MODEL_FILES = ("model.plan", "model.onnx", "model.xml", "model.bin")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NUMPY_TO_TRITON = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int32": "TYPE_INT32",
                    "int64": "TYPE_INT64"}


class TritonOptionError(OptionError):
    """An option does not fit the model (CLI exit code 2)."""


@dataclass(frozen=True)
class TensorConfig:
    """One input or output of a Triton config: dims without the batch axis, -1 = dynamic."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TritonModel:
    """A model file's record (``deploy.modelfile``) with its inputs and outputs as Triton declares them."""

    facts: ModelFacts
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]

    @property
    def path(self) -> Path:
        assert self.facts.path is not None
        return self.facts.path

    @property
    def platform(self) -> str:
        return _PLATFORMS[self.facts.format][0]

    @property
    def model_filename(self) -> str:
        return _PLATFORMS[self.facts.format][1]

    def files(self) -> list[tuple[Path, str]]:
        """(source file, name in the version folder) of everything the entry serves."""
        out = [(self.path, self.model_filename)]
        if self.facts.format == "ir":
            out.append((ir_bin_path(self.path), "model.bin"))
        return out + [(self.path.parent / rel, rel) for rel in self.facts.extra_files]

    def default_name(self, runtime: str | None = None) -> str:
        f = self.facts
        kind = "_features" if f.kind == "features" else ""
        served_by = runtime or _RUNTIME[f.format]
        suffix = {"tensorrt": "trt", "openvino": "openvino"}.get(served_by, "onnx")
        return f"convmlp_{f.variant or 'model'}{kind}_{suffix}"


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
    #: class-name file given (``--labels``); None: the names the model file records, if any
    labels: Path | None = None
    #: backend parameters (OpenVINO: NUM_STREAMS, INFERENCE_NUM_THREADS, PERFORMANCE_HINT...)
    parameters: tuple[tuple[str, str], ...] = ()
    #: class names written beside the config as ``labels.txt`` (``label_filename`` of the first output)
    label_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A written repository entry."""

    repository: Path
    model_name: str
    config_path: Path
    model_path: Path
    model: TritonModel
    options: TritonOptions
    #: what the user should know (a GPU entry written on a machine without a GPU)
    notes: tuple[str, ...] = ()

    @property
    def served_by(self) -> str:
        """``backend openvino`` where the config names its backend, else the platform."""
        named = BACKENDS[self.options.runtime].triton_named
        return f"backend {self.options.runtime}" if named else self.model.platform

    def to_dict(self) -> dict[str, Any]:
        m, o = self.model, self.options
        f = m.facts
        return {
            "repository": str(self.repository),
            "model_name": self.model_name,
            "config": str(self.config_path),
            "model_file": str(self.model_path),
            "platform": None if BACKENDS[o.runtime].triton_named else m.platform,
            "backend": o.runtime,
            "instance_kind": o.instance_kind,
            "notes": list(self.notes),
            "labels": str(o.labels) if o.labels else ("model metadata" if o.label_names else None),
            "parameters": dict(o.parameters),
            "source": str(f.path),
            "variant": f.variant,
            "kind": f.kind,
            "precision": f.precision,
            "max_batch_size": o.max_batch_size,
            "instances": o.instances,
            "dynamic_batching": o.dynamic_batching,
            "preferred_batch_sizes": list(o.preferred_batch_sizes),
            "num_classes": f.num_classes,
            "inputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in m.inputs],
            "outputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in m.outputs],
        }


# --------------------------------------------------------------------------- the model's tensors


def triton_model(facts: ModelFacts) -> TritonModel:
    """``facts`` with Triton's view of its tensors: dims without the batch axis, -1 where dynamic.

    ``OptionError`` for what Triton cannot batch: a fixed batch axis, a dtype Triton has no name for.
    """
    if facts.format not in _PLATFORMS:
        raise OptionError(f"{facts.name}: Triton serves an ONNX graph, an OpenVINO IR or a TensorRT engine")

    def tensor(t: TensorFacts, what: str) -> TensorConfig:
        if t.dtype not in _NUMPY_TO_TRITON:
            raise OptionError(f"{facts.name}: {what} {t.name!r} has element type {t.dtype}, which Triton does not "
                              "serve here")
        if t.dims[0] != -1:
            raise OptionError(f"{facts.name}: {what} {t.name!r} has a fixed batch axis ({t.dims[0]}); export "
                              "with a dynamic batch")
        return TensorConfig(t.name, _NUMPY_TO_TRITON[t.dtype], t.dims[1:])

    return TritonModel(facts, tuple(tensor(t, "input") for t in facts.inputs),
                       tuple(tensor(t, "output") for t in facts.outputs))


# --------------------------------------------------------------------------- options and config


#: the runtimes Triton has a backend for (``Backend.triton_kinds``)
RUNTIMES = tuple(n for n, b in BACKENDS.items() if b.triton_kinds)
#: model file format -> the Triton backends that serve it (the first is the default)
_SERVES = {
    "engine": tuple(n for n in RUNTIMES if BACKENDS[n].reads == "engine"),
    "onnx": tuple(n for n in RUNTIMES if BACKENDS[n].reads == "onnx"),
    "ir": tuple(n for n in RUNTIMES if n in READS_IR),
}
_RUNTIME = {k: v[0] for k, v in _SERVES.items()}
_DESCRIBE = {"engine": "a TensorRT engine", "onnx": "an ONNX graph", "ir": "an OpenVINO IR"}
INSTANCE_KINDS = ("gpu", "cpu")


def resolve_options(
    model: TritonModel,
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
    precision: str | None = None,
) -> TritonOptions:
    """Fill defaults from the model and refuse options it cannot serve (``TritonOptionError``).

    Defaults: runtime ``tensorrt`` for engines, ``onnxruntime`` for ONNX; instances
    ``gpu`` except with OpenVINO (CPU only); name ``convmlp_{variant}[_features]_{trt|onnx|openvino}``;
    max batch the engine's profile maximum (ONNX: 32); preferred sizes the engine's
    opt batch and the max batch. ``threads``/``streams`` are OpenVINO parameters, and so is ``precision``:
    ``bf16`` is its ``HINT_BF16`` (the backend's one precision parameter); ``fp32``/``auto`` set nothing (the
    backend's default: BF16 on a CPU with native BF16, ``deploy.deployconfig.triton_notes`` says so).
    """
    runtime = runtime or _RUNTIME[model.facts.format]
    if runtime not in RUNTIMES:
        raise TritonOptionError(f"unknown Triton backend {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime not in _SERVES[model.facts.format]:
        raise TritonOptionError(
            f"--backend {runtime} does not serve {_DESCRIBE[model.facts.format]} (use --backend "
            f"{' or '.join(_SERVES[model.facts.format])})"
        )
    row = BACKENDS[runtime]
    kind = instance_kind or row.triton_kinds[0]
    if kind not in INSTANCE_KINDS:
        raise TritonOptionError(f"--instance-kind must be gpu or cpu, not {kind!r}")
    if kind not in row.triton_kinds:
        where = " or ".join(k.upper() for k in row.triton_kinds)
        raise TritonOptionError(f"Triton's {row.title} backend runs on the {where} only: "
                                f"use --instance-kind {row.triton_kinds[0]}")
    params: list[tuple[str, str]] = []
    if threads is not None or streams is not None:
        if not row.triton_named:
            named = [n for n, b in BACKENDS.items() if b.triton_named]
            raise TritonOptionError(f"--threads and --streams are {words(BACKENDS[n].title for n in named)} "
                                    f"backend parameters (--backend {' or '.join(named)})")
        if threads is not None:
            if threads < 1:
                raise TritonOptionError(f"--threads must be >= 1, got {threads}")
            params.append(("INFERENCE_NUM_THREADS", str(threads)))
        if streams is not None:
            if streams < 1:
                raise TritonOptionError(f"--streams must be >= 1, got {streams}")
            params.append(("NUM_STREAMS", str(streams)))
    params += _precision_params(row, canonical(precision))
    if row.triton_named:
        params.append(("PERFORMANCE_HINT", "THROUGHPUT" if (streams or 1) > 1 else "LATENCY"))
    label_path, names = None, model.facts.labels
    if labels is not None:
        label_path = Path(labels)
        if model.facts.kind != "classifier" or model.facts.num_classes is None:
            raise TritonOptionError("--labels applies to a classifier (this model outputs features)")
        try:
            names = tuple(read_labels(label_path, model.facts.num_classes))
        except OptionError as exc:
            raise TritonOptionError(str(exc)) from None
    name = model_name or model.default_name(runtime)
    if not _NAME_RE.match(name):
        raise TritonOptionError(f"model name {name!r}: use letters, digits, '_', '-' and '.' only")
    limit = model.facts.max_batch
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
    if dynamic_batching and not preferred and model.facts.opt_batches:
        preferred = tuple(sorted({b for b in model.facts.opt_batches if b <= max_batch_size} | {max_batch_size}))
    if max_queue_delay_us < 0:
        raise TritonOptionError(f"max queue delay must be >= 0, got {max_queue_delay_us}")
    return TritonOptions(name, max_batch_size, instances, dynamic_batching, preferred, max_queue_delay_us,
                         runtime, kind, label_path, tuple(params), names)


def _precision_params(row: Backend, precision: str | None) -> list[tuple[str, str]]:
    """The backend parameters for a run-time ``precision``: OpenVINO's ``HINT_BF16`` for bf16; nothing for
    its default (fp32 has no parameter: ``triton_notes`` says what runs); refused elsewhere."""
    if precision in (None, AUTO) or (row.triton_named and precision == "fp32"):
        return []
    if row.triton_named and precision == "bf16":
        return [("HINT_BF16", "YES")]
    if row.triton_named:
        raise TritonOptionError(f"Triton's {row.title} backend sets bf16 (HINT_BF16) or its default, not {precision}: "
                                "serve that precision with 'serve --config'")
    raise TritonOptionError(f"Triton's {row.title} backend runs the precision of its file, not a run-time {precision}: "
                            "give the graph exported in that precision")


LABELS_FILE = "labels.txt"


def _tensor_block(t: TensorConfig, label_filename: str | None = None) -> str:
    dims = ", ".join(str(d) for d in t.dims)
    label = f'\n    label_filename: "{label_filename}"' if label_filename else ""
    return f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {dims} ]{label}\n  }}'


def render_config(model: TritonModel, opts: TritonOptions) -> str:
    """The ``config.pbtxt`` text (Triton ``ModelConfig`` protobuf text format)."""
    head = [f"# Written by convmlp-deploy {__version__} from {model.path.name}"]
    desc = ", ".join(
        f"{k}={v}" for k, v in (("variant", model.facts.variant), ("kind", model.facts.kind), ("precision", model.facts.precision)) if v
    )
    if desc:
        head.append(f"# {desc}")
    if model.facts.format == "engine":
        trt = model.facts.producer.get("tensorrt_version", "unknown")
        gpu = model.facts.producer.get("gpu_name", "unknown GPU")
        head.append(f"# Built with TensorRT {trt} on {gpu}: serve it with a Triton image carrying TensorRT {trt}.")
        if model.facts.hw_range:
            (h0, w0), (h1, w1) = model.facts.hw_range
            head.append(f"# Input height x width must lie within {h0}x{w0} .. {h1}x{w1} (engine profile).")
    if BACKENDS[opts.runtime].triton_named:
        serve = [f'backend: "{opts.runtime}"', f'default_model_filename: "{model.model_filename}"']
    else:
        serve = [f'platform: "{model.platform}"']
    labels = LABELS_FILE if opts.label_names is not None else None
    lines = head + [
        f'name: "{opts.model_name}"',
        *serve,
        f"max_batch_size: {opts.max_batch_size}",
        "input [",
        ",\n".join(_tensor_block(t) for t in model.inputs),
        "]",
        "output [",
        ",\n".join(_tensor_block(t, labels if i == 0 else None) for i, t in enumerate(model.outputs)),
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


def _check_existing(entry: Path, model: TritonModel, opts: TritonOptions) -> None:
    """``TritonOptionError`` when ``entry`` holds another model: another file, the same name at another
    precision (an FP32 IR and an INT8 IR both default to ``convmlp_s_openvino``), or another instance kind
    (a KIND_CPU entry is not silently turned into a KIND_GPU one)."""
    config = entry / "config.pbtxt"
    if not config.is_file():
        return
    text = config.read_text(errors="replace")
    source = re.search(r"^# Written by convmlp-deploy \S+ from (.+)$", text, re.M)
    precision = re.search(r"^# .*precision=([a-z0-9+]+)", text, re.M)
    old = (source.group(1).strip() if source else None, precision.group(1) if precision else None)
    new = (model.path.name, model.facts.precision)
    if old != new:
        what = f"{old[0]} ({old[1]})" if old[0] else "a config not written by convmlp-deploy"
        raise TritonOptionError(f"{entry} already serves {what}, not {new[0]} ({new[1]}): give another --model-name, "
                                "or --overwrite to replace it")
    kind = re.search(r"^\s*kind:\s*KIND_([A-Z]+)", text, re.M)
    if kind and kind.group(1).lower() != opts.instance_kind:
        raise TritonOptionError(f"{entry} already serves {new[0]} on KIND_{kind.group(1)}, not "
                                f"KIND_{opts.instance_kind.upper()}: give another --model-name, or --overwrite to "
                                "replace it")


def write_model_entry(
    model: TritonModel, opts: TritonOptions, repository: str | os.PathLike[str], *, overwrite: bool = False
) -> ModelEntry:
    """Write ``repository/NAME/config.pbtxt`` and ``repository/NAME/1/<model file>``.

    Every file is first copied to a temporary name beside its target and renamed
    only once all copies succeeded, so a failure leaves an existing entry as it was.
    Raises ``TritonOptionError`` when ``repository`` is an existing file, or when the entry holds another
    model (another file or precision) and ``overwrite`` is not set.
    """
    repo = Path(repository)
    if repo.exists() and not repo.is_dir():
        raise TritonOptionError(f"--repository {repo} is a file, not a folder")
    entry = repo / opts.model_name
    if entry.exists() and not entry.is_dir():
        raise TritonOptionError(f"{entry} exists and is a file, not a model folder")
    if not overwrite:
        _check_existing(entry, model, opts)
    version = entry / "1"
    created = not entry.exists()
    version.mkdir(parents=True, exist_ok=True)
    config_text = render_config(model, opts)
    check_schema(config_text)
    staged: list[tuple[Path, Path]] = []
    done = False
    try:
        for src, name in model.files():
            dst = version / name
            if not src.is_file():
                raise DeployError(f"{src}: file not found (needed by {model.path.name})")
            dst.parent.mkdir(parents=True, exist_ok=True)
            staged.append((stage_copy(src, dst), dst))
        if opts.label_names is not None:
            text = "".join(f"{name}\n" for name in opts.label_names)
            staged.append((stage_bytes(text.encode(), entry / LABELS_FILE), entry / LABELS_FILE))
        staged.append((stage_bytes(config_text.encode(), entry / "config.pbtxt"), entry / "config.pbtxt"))
        for tmp, dst in staged:
            os.replace(tmp, dst)
        done = True
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if created and not done:
            shutil.rmtree(entry, ignore_errors=True)
    if opts.label_names is None:  # a class-name file of an earlier entry no config points at any more
        (entry / LABELS_FILE).unlink(missing_ok=True)
    # a model file of another kind left from an earlier entry would confuse readers
    for other in _MODEL_FILES:
        if other not in {name for _, name in model.files()}:
            (version / other).unlink(missing_ok=True)
    return ModelEntry(repo, opts.model_name, entry / "config.pbtxt", version / model.model_filename, model, opts,
                      _notes(opts))


def _notes(opts: TritonOptions) -> tuple[str, ...]:
    """A GPU entry written here when this machine has no CUDA GPU: fine for another server, but say so."""
    if opts.instance_kind != "gpu":
        return ()
    import torch

    if torch.cuda.is_available():
        return ()
    cpu = "cpu" in BACKENDS[opts.runtime].triton_kinds
    hint = " (or --instance-kind cpu to serve it on a CPU)" if cpu else ""
    return (f"this machine has no CUDA GPU: the entry runs on a Triton server with one (KIND_GPU){hint}",)


def write_triton_entry(
    path: str | os.PathLike[str], repository: str | os.PathLike[str], *, format: str | None = None,  # noqa: A002
    overwrite: bool = False, **options: Any,
) -> ModelEntry:
    """``triton``: the record of the model file at ``path`` (read whole enough to refuse a broken one: an IR's
    weights against its XML), the options resolved against it (``resolve_options``), the entry written
    under ``repository`` (refused over another model's entry unless ``overwrite``)."""
    model = triton_model(describe(path, format))
    return write_model_entry(model, resolve_options(model, **options), repository, overwrite=overwrite)
