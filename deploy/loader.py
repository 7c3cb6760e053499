"""Open any model the same way: a PyTorch variant, an ONNX graph, an OpenVINO IR or a TensorRT engine.

``ModelSource`` is what a user names (``--variant`` with ``--weights``/``--pretrained``, ``--onnx``,
``--engine``). Opening it is two steps, and every command (validate, benchmark, evaluate, predict,
serve, the Python API) takes both from here:

- ``plan_model(source, backend_name, options)`` picks the backend it runs on (``deploy.backends``)
  and checks the request against that backend's rules, reading no model file and importing no
  runtime: a ``ModelPlan`` (frozen) with the options as they will run (``f32`` read as ``fp32``, the
  backend's device and precision filled in).
- ``open_model(plan)`` reads the record (``deploy.modelfile``; what the machine lacks for an engine is
  said first) and returns a ``LoadedModel``: the record, a runner that is not active yet (use it in a
  ``with`` block), and the notes a user should see. ``open_runner(plan)`` is the runner alone (the
  benchmark opens one per stream). ``load_model`` is both steps at once.

``reference_model`` is the one builder of the PyTorch FP32 model that every check compares against
and that ``export`` exports.

    >>> from deploy.loader import ModelSource, load_model
    >>> model = load_model(ModelSource.of("artifacts/convmlp_s.onnx"))
    >>> with model.runner:
    ...     logits = model.runner.infer(x)[model.output_name]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convmlp import create_model
from convmlp.model import ConvMLP
from convmlp.weights import PretrainedCfg

from .backends import Backend, RunnerOptions, backend, default_backend
from .errors import OptionError
from .modelfile import ENGINE_SUFFIXES, ModelFacts, describe, describe_model
from .runners.base import Runner

__all__ = [
    "SYNTHETIC_SEED", "reference_model", "ModelSource", "ModelPlan", "LoadedModel", "plan_model", "open_model",
    "open_runner", "load_model", "synthetic_note",
]

#: the seed of the synthetic weights used wherever no checkpoint is given (export and validate agree)
SYNTHETIC_SEED = 0


def reference_model(
    variant: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    pretrained: bool = False,
    num_classes: int | None = None,
    features: bool = False,
) -> ConvMLP:
    """The PyTorch FP32 model (eval mode): ``weights`` (the head's size from the checkpoint), the official
    ones, or, with neither, deterministic trained-looking weights from ``SYNTHETIC_SEED``."""
    synthetic = None if weights is not None or pretrained else SYNTHETIC_SEED
    return create_model(variant, weights=weights, pretrained=pretrained, num_classes=num_classes,
                        features_only=features, synthetic_seed=synthetic).eval()


@dataclass(frozen=True)
class ModelSource:
    """One model as a user names it: a file, or a variant with its weights."""

    variant: str | None = None
    onnx: Path | None = None  # an ONNX graph or an OpenVINO IR .xml
    engine: Path | None = None
    weights: Path | None = None
    pretrained: bool = False

    def __post_init__(self) -> None:
        if self.onnx is not None and self.engine is not None:
            raise OptionError("give either --onnx or --engine, not both")

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> ModelSource:
        """A file by its suffix: ``.engine``/``.plan``/``.trt`` is an engine, anything else a graph."""
        p = Path(path)
        return cls(engine=p) if p.suffix.lower() in ENGINE_SUFFIXES else cls(onnx=p)

    @property
    def path(self) -> Path | None:
        return self.onnx or self.engine

    @property
    def reads(self) -> str:
        """What a backend must read to run it: ``onnx``, ``engine`` or ``variant``."""
        return "onnx" if self.onnx is not None else "engine" if self.engine is not None else "variant"

    def describe(self) -> ModelFacts:
        """The file's record (``deploy.modelfile.describe``); a variant has none before it is built."""
        if self.path is None:
            raise OptionError("a PyTorch variant is described once built: use load_model")
        return describe(self.path, "onnx" if self.onnx is not None else "engine")

    def check_weights(self) -> None:
        """``OptionError`` for weights given with a file, or with no variant: a file carries its own
        (``--weights`` and ``--pretrained`` name a variant's; ``validate`` reads them as its reference's,
        not the runner's)."""
        if (self.path is not None or self.variant is None) and (self.weights is not None or self.pretrained):
            raise OptionError("--weights and --pretrained go with --variant (a file carries its weights)")


@dataclass(frozen=True)
class ModelPlan:
    """What will be opened, checked before any model file is read or runtime imported: the source, the
    backend (a ``deploy.backends`` name) and the run-time options as they will run."""

    source: ModelSource
    backend: str
    options: RunnerOptions

    @property
    def row(self) -> Backend:
        """The backend's row in ``deploy.backends.BACKENDS``."""
        return backend(self.backend)

    @property
    def reads(self) -> str:
        """``variant``, ``onnx`` or ``engine``."""
        return self.source.reads

    def describe(self) -> ModelFacts:
        """The file's record; for an engine, what the machine lacks (TensorRT, CUDA) is said first, so a
        user with a good engine learns that before whatever its sidecar says."""
        if self.reads == "engine":
            self.row.require()  # what the machine lacks comes before what the sidecar says
        return self.source.describe()

    def check_machine(self) -> None:
        """``BackendUnavailable`` (exit 1) for what this machine lacks to run the plan (the runtime, a
        CUDA device or provider), ``OptionError`` for a precision its CPU cannot run (``check_here``)."""
        self.row.check_here(self.options)

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        return {"backend": self.backend, "reads": self.reads, "path": str(self.source.path) if self.source.path else None,
                "variant": self.source.variant, "device": o.device, "precision": o.precision, "threads": o.threads,
                "streams": o.streams}


@dataclass
class LoadedModel:
    """A model ready to run: its record, its runner (not yet active) and what the user should know."""

    facts: ModelFacts
    runner: Runner
    backend: str
    notes: list[str] = field(default_factory=list)
    #: what it was opened from (``plan_model``)
    plan: ModelPlan | None = None

    @property
    def cfg(self) -> PretrainedCfg:
        """How to prepare an image for it (mean, std, crop, size)."""
        return self.facts.preprocessing

    @property
    def output_name(self) -> str:
        return self.facts.output_names[0]

    @property
    def source(self) -> str:
        """The file, the checkpoint, or what a variant's weights are."""
        f = self.facts
        if f.path is not None:
            return str(f.path)
        if f.checkpoint_sha256:
            return str(f.weights)
        what = "synthetic weights, seed 0" if f.synthetic else "official ImageNet-1k weights"
        return f"convmlp_{f.variant} ({what})"

    @property
    def num_classes(self) -> int:
        return self.facts.num_classes or 0

    @property
    def variant(self) -> str | None:
        return self.facts.variant

    @property
    def precision(self) -> str:
        return self.facts.precision

    def to_dict(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "source": self.source,
            "backend": self.backend,
            "runner": self.runner.name,
            "variant": self.variant,
            "kind": self.facts.kind,
            "num_classes": self.facts.num_classes,
            "precision": self.precision,
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "crop_pct": cfg.crop_pct,
            "input_size": list(cfg.input_size),
            "interpolation": cfg.interpolation,
            "inferred": list(self.facts.inferred),
        }


def _notes(facts: ModelFacts) -> list[str]:
    """What a user of ``facts``' model should be told before its answers are trusted (synthetic weights
    apart: ``synthetic_note`` says that once for all the models of a command)."""
    notes = list(facts.notes)
    if facts.format == "pytorch":
        return notes
    if facts.variant is None and "preprocessing" not in facts.recorded:
        notes.append(f"{facts.name} names no variant in its metadata: using the ImageNet preprocessing config")
    elif "preprocessing" not in facts.recorded:
        notes.append(f"{facts.name} carries no mean/std metadata: using ImageNet mean/std")
    return notes


def synthetic_note(names: list[str]) -> str:
    """One line for the models (by name) whose weights are synthetic: their classes mean nothing."""
    return (f"synthetic weights (no checkpoint given to export or --weights), so classes mean nothing: "
            f"{', '.join(names)}")


def plan_model(
    source: ModelSource | str | os.PathLike[str],
    backend_name: str | None = None,
    options: RunnerOptions | None = None,
) -> ModelPlan:
    """Pick the backend ``source`` (a ``ModelSource``, or a file path) runs on (``backend_name``, default:
    the one its kind runs on: torch, onnxruntime, openvino for an IR, tensorrt) and check the request
    against that backend's rules (``deploy.backends.Backend``): ``OptionError`` for what it does not run
    or take. Reads no model file and imports no runtime."""
    if not isinstance(source, ModelSource):
        source = ModelSource.of(source)
    given = source.reads if source.path is not None or source.variant is not None else None
    if backend_name is None and given is None:
        raise OptionError("nothing to load: give a variant, an ONNX graph or an engine")
    b = backend(backend_name or default_backend(given or "variant", source.path))
    b.check_reads(given, source.path)
    source.check_weights()
    options = b.resolve(options)
    b.check_options(options)
    return ModelPlan(source, b.name, options)


def open_runner(plan: ModelPlan, model: Any = None) -> Runner:
    """The runner of ``plan``, not active yet (use it in a ``with`` block): its file on its backend, or a
    variant's PyTorch model (``model`` when already built, else ``reference_model``)."""
    if plan.reads == "variant":
        s = plan.source
        if model is None:
            model = reference_model(s.variant, s.weights, pretrained=s.pretrained)  # type: ignore[arg-type]
        return plan.row.open(model, plan.options)
    return plan.row.open(plan.source.path, plan.options)


def open_model(plan: ModelPlan) -> LoadedModel:
    """``plan``'s model: its record (``ModelPlan.describe``, or the built variant's), its runner (not
    active yet) and the notes a user should see."""
    if plan.reads == "variant":
        s = plan.source
        model = reference_model(s.variant, s.weights, pretrained=s.pretrained)  # type: ignore[arg-type]
        facts = describe_model(model)
        runner = open_runner(plan, model)
    else:
        facts = plan.describe()
        runner = open_runner(plan)
    return LoadedModel(facts, runner, plan.backend, _notes(facts), plan)


def load_model(
    source: ModelSource | str | os.PathLike[str],
    *,
    backend_name: str | None = None,
    options: RunnerOptions | None = None,
) -> LoadedModel:
    """``open_model(plan_model(source, backend_name, options))``: options the backend cannot honour are
    ``OptionError`` before anything is read; what the machine lacks (TensorRT, CUDA) is said before an
    engine's sidecar is read."""
    return open_model(plan_model(source, backend_name, options))
