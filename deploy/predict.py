"""Classify image files with any backend: top-k classes with softmax probabilities.

The model (``--engine``, ``--onnx`` or a PyTorch variant) is opened as a runner;
its preprocessing config comes from the model's own record (the engine's sidecar
manifest, the ONNX ``metadata_props``, or ``PRETRAINED_CFGS``). One image that
cannot be read fails alone: ``predict_images`` yields an error for it and goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convmlp.preprocess import INTERPOLATIONS, ImageError, ResolutionLike, load_image, preprocess
from convmlp.weights import PRETRAINED_CFGS, PretrainedCfg

from .backends import Backend, RunnerOptions, backend, default_backend
from .errors import BackendUnavailable, DeployError
from .runners.base import Runner

__all__ = [
    "ClassScore",
    "ImageResult",
    "ModelInfo",
    "softmax",
    "top_k",
    "load_labels",
    "cfg_from_metadata",
    "open_classifier",
    "predict_images",
]


@dataclass(frozen=True)
class ClassScore:
    """One of the top-k classes of an image."""

    rank: int
    index: int
    probability: float
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ImageResult:
    """The answer for one image file: ``top`` on success, ``error`` (one line) on failure."""

    image: str
    top: list[ClassScore] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "ok": self.ok,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "top_k": [s.to_dict() for s in self.top],
            "error": self.error,
        }


@dataclass
class ModelInfo:
    """What ``predict`` needs to know about an opened classifier."""

    runner: Runner
    source: str
    backend: str
    variant: str | None
    num_classes: int
    cfg: PretrainedCfg
    output_name: str = "logits"
    notes: list[str] = field(default_factory=list)
    precision: str | None = None  # what the model file carries (PyTorch: fp32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "backend": self.backend,
            "runner": self.runner.name,
            "variant": self.variant,
            "num_classes": self.num_classes,
            "precision": self.precision,
            "mean": list(self.cfg.mean),
            "std": list(self.cfg.std),
            "crop_pct": self.cfg.crop_pct,
        }


# --------------------------------------------------------------------------- scores


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int, labels: Sequence[str] | None = None) -> list[ClassScore]:
    """The ``k`` most probable classes of one logits vector (ties: lower index first)."""
    vec = np.asarray(logits).reshape(-1)
    if labels is not None and len(labels) != vec.size:
        raise DeployError(f"{len(labels)} labels for {vec.size} classes")
    probs = softmax(vec)
    order = np.argsort(-probs, kind="stable")[: max(0, min(k, vec.size))]
    return [
        ClassScore(rank=r + 1, index=int(i), probability=float(probs[i]), label=labels[i] if labels else None)
        for r, i in enumerate(order)
    ]


def load_labels(path: str | os.PathLike[str], num_classes: int | None = None) -> list[str]:
    """Class names from a text file, one per line (trailing blank lines ignored).

    Raises ``DeployError`` when the count differs from ``num_classes``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DeployError(f"{path}: labels file is not UTF-8 text") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if num_classes is not None and len(labels) != num_classes:
        raise DeployError(
            f"{path}: {len(labels)} labels but the model has {num_classes} classes (one label per line)"
        )
    return labels


# --------------------------------------------------------------------------- opening a model


def cfg_from_metadata(base: PretrainedCfg, meta: dict[str, str]) -> PretrainedCfg:
    """``base`` with the preprocessing keys an exported ONNX records (mean, std, crop_pct, input_size, interpolation)."""

    def numbers(key: str, n: int) -> tuple[Any, ...] | None:
        if key not in meta:
            return None
        try:
            vals = json.loads(meta[key])
        except json.JSONDecodeError:
            vals = None
        if not (isinstance(vals, list) and len(vals) == n and all(isinstance(v, (int, float)) for v in vals)):
            raise DeployError(f"model metadata {key!r} is not a list of {n} numbers: {meta[key]!r}")
        return tuple(vals)

    changes: dict[str, Any] = {}
    for key in ("mean", "std"):
        vals = numbers(key, 3)
        if vals is not None:
            changes[key] = tuple(float(v) for v in vals)
    size = numbers("input_size", 3)
    if size is not None:
        changes["input_size"] = tuple(int(v) for v in size)
    if "crop_pct" in meta:
        try:
            changes["crop_pct"] = float(meta["crop_pct"])
        except ValueError:
            raise DeployError(f"model metadata 'crop_pct' is not a number: {meta['crop_pct']!r}") from None
    if meta.get("interpolation"):
        if meta["interpolation"].lower() not in INTERPOLATIONS:
            raise DeployError(f"model metadata interpolation {meta['interpolation']!r} is not one of {INTERPOLATIONS}")
        changes["interpolation"] = meta["interpolation"].lower()
    return dataclasses.replace(base, **changes)


def _open_onnx(path: Path, backend: str, options: RunnerOptions) -> ModelInfo:
    from .triton import read_graph_facts

    facts = read_graph_facts(path)
    if facts.kind != "classifier" or facts.num_classes is None:
        raise DeployError(f"{path}: a {facts.kind} graph (outputs {', '.join(facts.output_names)}); predict needs a classifier")
    notes = []
    if facts.variant is None:
        notes.append(f"{path.name} names no variant in its metadata: using the ImageNet preprocessing config")
    base = PRETRAINED_CFGS.get(facts.variant or "", PRETRAINED_CFGS["s"])
    meta = facts.metadata
    if "mean" not in meta or "std" not in meta:
        notes.append(f"{path.name} carries no mean/std metadata: using ImageNet mean/std")
    if meta.get("weights", "").startswith("synthetic"):
        notes.append(f"{path.name} was exported from synthetic weights (no --weights), so classes mean nothing")
    cfg = cfg_from_metadata(base, meta)
    runner = _backend(backend, "onnx").open(path, options)
    return ModelInfo(runner, str(path), backend, facts.variant, facts.num_classes, cfg,
                     facts.output_names[0], notes, precision=facts.precision)


def _open_engine(path: Path) -> ModelInfo:
    from .triton import read_engine_facts

    backend("tensorrt").require()  # what the machine lacks comes before what the sidecar says
    facts = read_engine_facts(path)
    if facts.kind != "classifier" or facts.num_classes is None:
        raise DeployError(f"{path}: a {facts.kind} engine; predict needs a classifier")
    try:
        from .runners.tensorrt import TensorRTRunner
    except ImportError as exc:
        raise BackendUnavailable(f"the TensorRT runner cannot be imported here ({exc})") from None
    cfg = PRETRAINED_CFGS.get(facts.variant or "", PRETRAINED_CFGS["s"])
    runner = TensorRTRunner(path)
    return ModelInfo(runner, str(path), "tensorrt", facts.variant, facts.num_classes, cfg, facts.output_names[0],
                     precision=facts.precision)


def _open_torch(variant: str, weights: str | os.PathLike[str] | None, pretrained: bool, device: str) -> ModelInfo:
    from convmlp import create_model

    from .runners.torch_runner import TorchRunner
    from .validate import reference_model

    notes = []
    if pretrained:
        model = create_model(variant, pretrained=True).eval()
        source = f"convmlp_{variant} (official ImageNet-1k weights)"
    elif weights is not None:
        model = create_model(variant, weights=weights).eval()
        source = str(weights)
    else:
        model = reference_model(variant)
        source = f"convmlp_{variant} (synthetic weights, seed 0)"
        notes.append("no --weights: synthetic weights (the ones export uses), so classes mean nothing")
    runner = TorchRunner(model, device=device)
    return ModelInfo(runner, source, "torch", variant, model.num_classes, PRETRAINED_CFGS[variant], "logits", notes,
                     precision="fp32")


def _backend(name: str, reads: str) -> Backend:
    b = backend(name)
    if b.reads != reads:
        raise ValueError(f"--backend {name} does not run {'an ONNX graph' if reads == 'onnx' else 'a ' + reads}")
    return b


def open_classifier(
    *,
    engine: str | os.PathLike[str] | None = None,
    onnx: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    device: str = "cpu",
    backend: str | None = None,
    options: RunnerOptions | None = None,
) -> ModelInfo:
    """Open exactly one of an engine, an ONNX file or a PyTorch variant as a classifier.

    ``backend`` picks the runtime for the file (``deploy.backends``; default: the
    one that file kind runs on), ``options`` its run-time settings. The returned
    ``ModelInfo.runner`` is not active yet: use it in a ``with`` block. An option
    the backend cannot honour is ``ValueError`` (usage).
    """
    given = [n for n, v in (("engine", engine), ("onnx", onnx), ("variant", variant)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of engine, onnx or variant")
    if engine is not None:
        if backend not in (None, "tensorrt"):
            raise ValueError(f"--backend {backend} does not run TensorRT engines")
        return _open_engine(Path(engine))
    if onnx is not None:
        return _open_onnx(Path(onnx), backend or default_backend("onnx", onnx), options or RunnerOptions())
    if backend not in (None, "torch"):
        raise ValueError(f"--backend {backend} does not run a PyTorch --variant")
    assert variant is not None
    return _open_torch(variant.lower(), weights, pretrained, device)


# --------------------------------------------------------------------------- predicting


def predict_images(
    info: ModelInfo,
    images: Iterable[str | os.PathLike[str]],
    *,
    k: int = 5,
    labels: Sequence[str] | None = None,
    resolution: ResolutionLike = None,
) -> Iterator[ImageResult]:
    """Top-``k`` classes of each image, one at a time, with ``info.runner`` active.

    An unreadable file, a non-image or a failed inference gives an ``ImageResult``
    with ``error`` set; the following images are still answered.
    """
    if not info.runner.is_active:
        raise DeployError("predict_images needs an active runner (use 'with info.runner:')")
    for path in images:
        name = str(path)
        try:
            x = preprocess(load_image(path), info.cfg, resolution=resolution)
            out = info.runner.infer(x)
            logits = out[info.output_name][0]
            yield ImageResult(name, top_k(logits, k, labels), tuple(x.shape))
        except (ImageError, DeployError) as exc:
            msg = str(exc)
            yield ImageResult(name, error=msg if msg.startswith(name) else f"{name}: {msg}")
