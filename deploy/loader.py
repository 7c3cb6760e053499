"""Open any model the same way: a PyTorch variant, an ONNX graph, an OpenVINO IR or a TensorRT engine.

``ModelSource`` is what a user names (``--variant`` with ``--weights``/``--pretrained``, ``--onnx``,
``--engine``). ``load_model`` reads its record (``deploy.modelfile``), picks the backend it runs on
(``deploy.backends``) and returns a ``LoadedModel``: the record, a runner that is not active yet (use
it in a ``with`` block), and the notes a user should see. ``reference_model`` is the one builder of
the PyTorch FP32 model that every check compares against and that ``export`` exports.

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

from .backends import RunnerOptions, backend, default_backend
from .errors import OptionError
from .modelfile import ENGINE_SUFFIXES, ModelFacts, describe, describe_model
from .runners.base import Runner

__all__ = ["SYNTHETIC_SEED", "reference_model", "ModelSource", "LoadedModel", "load_model", "synthetic_note"]

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


@dataclass
class LoadedModel:
    """A model ready to run: its record, its runner (not yet active) and what the user should know."""

    facts: ModelFacts
    runner: Runner
    backend: str
    notes: list[str] = field(default_factory=list)

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


def load_model(
    source: ModelSource | str | os.PathLike[str],
    *,
    backend_name: str | None = None,
    options: RunnerOptions | None = None,
) -> LoadedModel:
    """Open ``source`` (a ``ModelSource``, or a file path) on ``backend_name`` (default: the one its kind
    runs on: torch, onnxruntime, openvino for an IR, tensorrt). What the machine lacks (TensorRT, CUDA)
    is said before any file is read; options the backend cannot honour are ``OptionError``."""
    if not isinstance(source, ModelSource):
        source = ModelSource.of(source)
    options = options or RunnerOptions()
    b = backend(backend_name or default_backend(source.reads, source.path))
    b.check_reads(source.reads)
    if source.reads == "engine":
        b.require()  # what the machine lacks comes before what the sidecar says
    if source.reads == "variant":
        if source.variant is None:
            raise OptionError("nothing to load: give a variant, an ONNX graph or an engine")
        b.check_options(options)
        model = reference_model(source.variant, source.weights, pretrained=source.pretrained)
        facts = describe_model(model)
        runner = b.open(model, options)
    else:
        facts = source.describe()
        runner = b.open(source.path, options)
    return LoadedModel(facts, runner, b.name, _notes(facts))
