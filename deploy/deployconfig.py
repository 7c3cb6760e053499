"""A tuned deployment as a file: the schema of ``deploy.json``, its writer, its reader and its checks.

``tune`` finds the fastest configuration whose accuracy gate holds on the machine at hand and writes it
here; ``serve --config``, ``triton --config`` and ``deploy.load(config=...)`` read it back and run exactly
that configuration. The file records the facts it was found under (after Model Analyzer's output
repository): each model file with its sha256, the machine (CPU model and ISA flags, cores, runtime
versions), the gate results and the set they were measured on, and the figures measured.

Checks on reading (``read_config`` then ``check_config``):

- not JSON, not an object, another schema (``foreign``), another schema version (``stale``), a field
  missing or of the wrong type (``malformed``): ``ConfigError`` (exit 2), one line;
- a model file whose sha256 differs from the recorded one: ``ConfigError`` (exit 2): the configuration
  was found for another file; a model file that is missing: ``DeployError`` (exit 1);
- made on another machine (CPU model or flags differ): one warning line (``ConfigCheck.warnings``): the
  configuration still runs, but it was the fastest there, not necessarily here.

Model paths are stored relative to the config file's folder when they lie under it, else absolute.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convmlp.weights import file_sha256

from .artifacts import atomic_write_json
from .errors import DeployError, OptionError

__all__ = [
    "SCHEMA", "VERSION", "ConfigError", "ModelFile", "DeployConfig", "ConfigCheck", "machine_facts",
    "write_config", "read_config", "check_config", "load_config", "runner_options", "model_source",
    "serve_settings", "triton_settings", "triton_notes",
]

SCHEMA = "convmlp-deploy/deployment"
VERSION = 1


class ConfigError(OptionError):
    """A ``deploy.json`` that cannot be used as given: malformed, foreign, stale, or for another model file."""


@dataclass(frozen=True)
class ModelFile:
    """One file the deployment runs (a graph, an IR, an engine) or, for PyTorch, its checkpoint.

    ``role``: ``model`` (what the runner opens) or ``weights`` (PyTorch's checkpoint); ``sha256`` None only
    for synthetic weights (nothing to hash)."""

    role: str
    path: str | None
    sha256: str | None
    format: str
    precision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "path": self.path, "sha256": self.sha256, "format": self.format,
                "precision": self.precision}


@dataclass(frozen=True)
class DeployConfig:
    """What runs (backend, precision, threads, streams, batching, shape policy) and what it was found under."""

    backend: str
    files: tuple[ModelFile, ...]
    #: run-time precision where the backend chooses it (OpenVINO's hint), else None (the file's own)
    precision: str | None
    #: the precision that computes (the gate's): ``fp32``, ``bf16``, ``int8+bf16``...
    computes: str
    threads: int | None
    streams: int
    batching: dict[str, Any]  # batch, max_batch, max_queue_delay_us
    shape_policy: dict[str, Any]  # deploy.shapes.ShapePolicy.to_dict() plus "searched"
    variant: str | None = None
    device: str = "cpu"
    cuda_graph: bool = False
    measured: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    partial: bool = False
    #: where the config was read from (paths resolve against its folder); not written
    origin: Path | None = None

    @property
    def model(self) -> ModelFile:
        return next(f for f in self.files if f.role == "model")

    @property
    def weights(self) -> ModelFile | None:
        return next((f for f in self.files if f.role == "weights"), None)

    def resolve(self, f: ModelFile) -> Path | None:
        """``f``'s path, relative ones against the config file's folder."""
        if f.path is None:
            return None
        p = Path(f.path)
        return p if p.is_absolute() or self.origin is None else self.origin.parent / p

    def label(self) -> str:
        threads = f"{self.threads} threads" if self.threads else "default threads"
        return (f"{self.backend} {self.computes}, {threads}, {self.streams} stream(s), batch "
                f"{self.batching.get('batch', 1)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "version": VERSION, "partial": self.partial,
            "deployment": {
                "backend": self.backend, "device": self.device, "variant": self.variant,
                "precision": self.precision, "computes": self.computes, "threads": self.threads,
                "streams": self.streams, "cuda_graph": self.cuda_graph, "batching": dict(self.batching),
                "shape_policy": dict(self.shape_policy),
            },
            "files": [f.to_dict() for f in self.files],
            "measured": self.measured, "gate": self.gate, "machine": self.machine, "search": self.search,
        }


def machine_facts(device: str = "cpu") -> dict[str, Any]:
    """What a configuration was found on: CPU model and the ISA flags that decide BF16/INT8, cores,
    runtime versions (``deploy.machine``)."""
    from .machine import cpu_features, machine_info, versions

    cpu = cpu_features()
    info = machine_info(device)
    return {"cpu": info["cpu"], "flags": list(cpu["flags"]), "bf16_unit": cpu["bf16_unit"],
            "int8_unit": cpu["int8_unit"], "cores": info["cores"], "usable_cores": info["usable_cores"],
            "gpu": info.get("gpu"), "versions": versions()}


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def write_config(path: str | os.PathLike[str], config: DeployConfig) -> Path:
    """Write ``config`` atomically to ``path``; model paths relative to its folder where they lie under it."""
    target = Path(path)
    files = tuple(ModelFile(f.role, _rel(Path(f.path), target.parent) if f.path else None, f.sha256, f.format,
                            f.precision) for f in config.files)
    data = DeployConfig(**{**config.__dict__, "files": files}).to_dict()
    return atomic_write_json(target, data)


def _need(obj: Any, key: str, kind: type | tuple[type, ...], where: str, name: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ConfigError(f"{name} is malformed: {where} has no {key!r} (write it again with 'convmlp-deploy tune')")
    value = obj[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{name} is malformed: {where}.{key} is {type(value).__name__} "
                          "(write it again with 'convmlp-deploy tune')")
    return value


def read_config(path: str | os.PathLike[str]) -> DeployConfig:
    """The configuration in ``path``; ``ConfigError`` (one line) for a malformed, foreign or stale file,
    ``DeployError`` for one that cannot be read."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeployError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{p.name} is malformed: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        what = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{p.name} is not a deployment written by 'convmlp-deploy tune' (schema {what!r}, "
                          f"expected {SCHEMA!r})")
    if data.get("version") != VERSION:
        raise ConfigError(f"{p.name} is stale: schema version {data.get('version')!r}, this tool reads {VERSION}; "
                          "run 'convmlp-deploy tune' again")
    dep = _need(data, "deployment", dict, "the file", p)
    files_raw = _need(data, "files", list, "the file", p)
    files = []
    for i, f in enumerate(files_raw):
        where = f"files[{i}]"
        files.append(ModelFile(_need(f, "role", str, where, p), f.get("path"), f.get("sha256"),
                               _need(f, "format", str, where, p), f.get("precision")))
    if not any(f.role == "model" for f in files):
        raise ConfigError(f"{p.name} is malformed: no file has role 'model'")
    threads = dep.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{p.name} is malformed: deployment.threads is {threads!r}")
    streams = _need(dep, "streams", int, "deployment", p)
    if streams < 1:
        raise ConfigError(f"{p.name} is malformed: deployment.streams is {streams}")
    return DeployConfig(
        backend=_need(dep, "backend", str, "deployment", p), files=tuple(files), precision=dep.get("precision"),
        computes=_need(dep, "computes", str, "deployment", p), threads=threads, streams=streams,
        batching=_need(dep, "batching", dict, "deployment", p),
        shape_policy=_need(dep, "shape_policy", dict, "deployment", p), variant=dep.get("variant"),
        device=dep.get("device", "cpu"), cuda_graph=bool(dep.get("cuda_graph", False)),
        measured=data.get("measured") or {}, gate=data.get("gate") or {}, machine=data.get("machine") or {},
        search=data.get("search") or {}, partial=bool(data.get("partial", False)), origin=p,
    )


@dataclass(frozen=True)
class ConfigCheck:
    """What ``check_config`` found: the config, the lines to show (another machine, a partial search)."""

    config: DeployConfig
    warnings: tuple[str, ...] = ()


def check_config(config: DeployConfig) -> ConfigCheck:
    """Refuse a config whose model files are missing (``DeployError``) or differ from the recorded sha256
    (``ConfigError``); say in one line each when it was found on another machine or by a partial search."""
    from .backends import BACKENDS

    name = config.origin.name if config.origin else "the deployment"
    if config.backend not in BACKENDS:
        raise ConfigError(f"{name} names backend {config.backend!r}, which this tool does not have "
                          f"({', '.join(BACKENDS)})")
    for f in config.files:
        path = config.resolve(f)
        if path is None:
            continue
        if not path.is_file():
            raise DeployError(f"{name}: {f.role} file {path} is missing")
        if f.sha256 and file_sha256(path) != f.sha256:
            raise ConfigError(f"{name} was tuned for another {path.name} (sha256 {f.sha256[:12]}... recorded, the "
                              "file differs): run 'convmlp-deploy tune' again for this file")
    warnings = []
    here = machine_facts(config.device)
    there = config.machine
    if there and (there.get("cpu") != here["cpu"] or sorted(there.get("flags") or []) != sorted(here["flags"])):
        warnings.append(f"{name} was tuned on another machine ({there.get('cpu')}, "
                        f"{' '.join(there.get('flags') or []) or 'no flags'}; this one: {here['cpu']}, "
                        f"{' '.join(here['flags']) or 'no flags'}): it runs, but may not be the fastest here")
    if config.partial:
        warnings.append(f"{name} is the best found by a search that was stopped before it ended (partial)")
    return ConfigCheck(config, tuple(warnings))


def load_config(path: str | os.PathLike[str]) -> ConfigCheck:
    """``read_config`` then ``check_config``: what every consumer calls."""
    return check_config(read_config(path))


def runner_options(config: DeployConfig) -> Any:
    """The ``RunnerOptions`` the configuration runs with."""
    import dataclasses

    from .backends import BACKENDS, RunnerOptions
    from .shapes import ShapePolicy

    shapes = ShapePolicy()
    if config.shape_policy.get("mode"):
        known = {f.name for f in dataclasses.fields(ShapePolicy)}
        shapes = ShapePolicy(**{k: (tuple(map(tuple, v)) if k == "warmup" else v)
                                for k, v in config.shape_policy.items() if k in known})
    # streams are queries in flight on one runner where the backend takes them; elsewhere they are instances
    inflight = config.streams > 1 and "streams" in BACKENDS[config.backend].takes
    return RunnerOptions(device=config.device, precision=config.precision, threads=config.threads,
                         streams=config.streams if inflight else None, cuda_graph=config.cuda_graph, shapes=shapes)


def model_source(config: DeployConfig) -> Any:
    """The ``deploy.loader.ModelSource`` the configuration opens."""
    from .loader import ModelSource

    m = config.model
    path = config.resolve(m)
    w = config.weights
    if m.format == "pytorch":
        weights = config.resolve(w) if w is not None else None
        return ModelSource(variant=config.variant, weights=weights)
    if m.format == "engine":
        return ModelSource(engine=path)
    return ModelSource(onnx=path)


def serve_settings(config: DeployConfig) -> dict[str, int]:
    """``serve``'s batching and instances for the configuration: max batch, queue delay, one instance per
    stream where the runtime takes one query at a time."""
    from .backends import BACKENDS

    b = config.batching
    return {"max_batch": int(b.get("max_batch", b.get("batch", 1)) or 1),
            "max_queue_delay_us": int(b.get("max_queue_delay_us", 0) or 0),
            "instances": 1 if "streams" in BACKENDS[config.backend].takes else config.streams}


def triton_settings(config: DeployConfig) -> dict[str, Any]:
    """``triton``'s options for the configuration: the Triton backend, instances, dynamic batching, and the
    backend parameters it takes (OpenVINO: INFERENCE_NUM_THREADS and NUM_STREAMS)."""
    from .backends import BACKENDS

    row = BACKENDS[config.backend]
    if not row.triton_kinds:
        raise ConfigError(f"the deployment runs on {row.title or config.backend}, which Triton has no backend for: "
                          "tune without it, or serve it with 'serve --config'")
    b = config.batching
    batch = int(b.get("max_batch", b.get("batch", 1)) or 1)
    named = row.triton_named
    return {
        "runtime": config.backend,
        "instances": 1 if named else config.streams,
        "dynamic_batching": True,
        "max_batch_size": max(batch, 1),
        "preferred_batch_sizes": (batch,) if batch > 1 else (),
        "max_queue_delay_us": int(b.get("max_queue_delay_us", 0) or 0),
        "threads": config.threads if named else None,
        "streams": config.streams if named else None,
        "precision": config.precision if named else None,
        "instance_kind": "gpu" if config.device == "cuda" else "cpu",
    }


def triton_notes(config: DeployConfig) -> list[str]:
    """What a Triton entry written from ``config`` does not carry: an FP32 precision hint (Triton's OpenVINO
    backend sets BF16 with ``HINT_BF16`` and has no FP32 parameter: it compiles with OpenVINO's default, BF16
    on a CPU with native BF16), and onnxruntime's thread count."""
    from .machine import cpu_features

    notes = []
    if config.precision == "fp32":
        default = "bf16" if cpu_features()["bf16"] else "fp32"
        same = "the same here" if default == "fp32" else "BF16 here, NOT the FP32 that was tuned"
        notes.append("the entry cannot set the run-time precision fp32 (Triton's OpenVINO backend has only HINT_BF16): "
                     f"it compiles with its default, {same}")
    if config.threads is not None and not _named(config.backend):
        notes.append(f"the entry does not set {config.threads} threads: Triton's {config.backend} backend picks its own")
    return notes


def _named(backend: str) -> bool:
    from .backends import BACKENDS

    return BACKENDS[backend].triton_named
