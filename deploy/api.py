"""The way to embed ConvMLP in a Python service: ``deploy.load`` opens any artifact this tool writes.

    >>> import deploy
    >>> model = deploy.load("artifacts/convmlp_s.onnx")            # or .openvino.xml, .engine, "s" + weights=
    >>> logits = model(batch)                                      # float32 NCHW, any size in the model's range
    >>> model.classify([Image.open("cat.jpg")], top_k=5)           # images -> labelled top-k
    >>> model.info()                                               # backend, precision, what it read

The file's record (``deploy.modelfile``) gives the preprocessing (mean, std, crop) and the classes; the
backend is the file's own unless asked (``deploy.backends``). A ``Model`` is thread-safe: runners that
take concurrent queries (OpenVINO) get them, the others are called one at a time. ``predict``,
``evaluate`` and ``serve`` use this same loader (``deploy.loader``), so there is no second way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends import RunnerOptions
from .errors import DeployError, OptionError
from .loader import LoadedModel, ModelSource, load_model, synthetic_note
from .precision import run_precision
from .shapes import ShapePolicy, as_policy

__all__ = ["Model", "load"]


class Model:
    """A loaded ConvMLP classifier (or backbone), active until ``close()``; a context manager too."""

    def __init__(self, loaded: LoadedModel, labels: Sequence[str] | None = None) -> None:
        self._loaded = loaded
        self.labels = list(labels) if labels is not None else None
        loaded.runner.__enter__()
        self._lock = None if loaded.runner.concurrent else threading.Lock()
        self._closed = False
        #: the ``deploy.deployconfig.DeployConfig`` it was opened from (``load(config=...)``), else None
        self.deployment: Any = None

    # -- what it is ------------------------------------------------------------------
    @property
    def facts(self) -> Any:
        """The file's record (``deploy.modelfile.ModelFacts``)."""
        return self._loaded.facts

    @property
    def backend(self) -> str:
        return self._loaded.backend

    @property
    def precision(self) -> str | None:
        """What runs: the file's precision, or the run-time one a backend chose (``bf16``, ``int8+bf16``)."""
        return run_precision(self._loaded.precision, getattr(self._loaded.runner, "precision_used", None))

    @property
    def num_classes(self) -> int:
        return self._loaded.num_classes

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def source(self) -> str:
        """The file, the checkpoint, or what a variant's weights are."""
        return self._loaded.source

    @property
    def runner_name(self) -> str:
        return self._loaded.runner.name

    @property
    def cfg(self) -> Any:
        """How to prepare an image for it (``convmlp.PretrainedCfg``: mean, std, crop, size)."""
        return self.facts.preprocessing

    @property
    def notes(self) -> list[str]:
        """What a user should know before trusting its answers (inferred facts, synthetic weights)."""
        line = self.facts.inferred_line()
        notes = ([line] if line else []) + list(self._loaded.notes)
        return notes + ([synthetic_note([self.name])] if self.facts.synthetic else [])

    def info(self) -> dict[str, Any]:
        stats = getattr(self._loaded.runner, "shape_stats", None)
        return {**self._loaded.to_dict(), "precision": self.precision, "labels": self.labels is not None,
                "notes": self.notes, "shapes": stats() if callable(stats) else None}

    # -- running -----------------------------------------------------------------------
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N x classes) of a float32 NCHW batch, normalised as ``self.facts.preprocessing`` says."""
        return self.outputs(batch)[self._loaded.output_name]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a backbone's f1..f4)."""
        self._check_open()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._lock is None:
            return self._loaded.runner.infer(x)
        with self._lock:
            return self._loaded.runner.infer(x)

    def preprocess(self, image: Any, resolution: Any = None) -> np.ndarray:
        """One (1, 3, H, W) batch from a PIL image, a file path, encoded bytes, or an HxW(x3) array.

        Paths, bytes and PIL images go through the one decoder (``convmlp.preprocess.load_image``: EXIF
        orientation, 16-bit and float scaled), so ``Image.open(f)`` and ``f`` give the same batch."""
        from convmlp.preprocess import from_array, load_image, preprocess

        self._check_open()
        image = from_array(image) if isinstance(image, np.ndarray) else load_image(image)
        return preprocess(image, self.facts.preprocessing, resolution=resolution)

    def classify(self, images: Sequence[Any], top_k: int = 5, resolution: Any = None) -> list[list[Any]]:
        """Top-``top_k`` classes (``deploy.classes.ClassScore``, labelled when labels are known) per image.

        Images of the model's input size go through one batch; ``resolution="native"`` keeps each
        image's size (one inference each)."""
        from .classes import top_k as best

        self.facts.require_classifier("classify")
        xs = [self.preprocess(im, resolution) for im in images]
        if not xs:
            return []
        if len({x.shape for x in xs}) == 1:
            logits = self(np.concatenate(xs))
        else:
            logits = np.concatenate([self(x) for x in xs])
        return [best(row, top_k, self.labels) for row in logits]

    # -- life ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise DeployError(f"{self.name}: the model is closed (deploy.load it again)")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loaded.runner.__exit__(None, None, None)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, backend={self.backend!r}, precision={self.precision!r})"


def load(
    source: str | os.PathLike[str] | ModelSource | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    backend: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    shapes: ShapePolicy | str | None = None,
) -> Model:
    """Open ``source``: an ONNX graph, an OpenVINO IR (``.xml``), a TensorRT engine, or a variant name
    (``"s"``, ``"m"``, ``"l"``; with ``weights``/``pretrained``, else synthetic weights).

    ``backend``: a ``deploy.backends`` name (default: the file's own); ``precision``: the run-time precision
    where the backend chooses it (OpenVINO); ``device``: default the backend's first (cpu; cuda for
    TensorRT); ``labels``: class names (a file of one name per line, or a
    list) [default: those the file records, ``export --labels``]. ``config``: a ``deploy.json`` written by
    ``tune`` instead of ``source``: exactly its model, backend, precision, threads and streams (checked by
    ``deploy.deployconfig``; ``Model.deployment`` holds it, ``Model.notes`` its warnings). Raises
    ``OptionError``/``DeployError`` with one line, as the CLI does. ``shapes``: how input sizes are
    served (``deploy.shapes.ShapePolicy``, or ``"dynamic"``/``"static"``) [default: dynamic: any size is
    answered at once, sizes that recur get their own executable off the request path].
    """
    if config is not None:
        return _load_config(config, given=source is not None or weights is not None or pretrained or backend is not None
                            or precision is not None or threads is not None or device is not None or shapes is not None,
                            labels=labels)
    if source is None:
        raise OptionError("nothing to load: give a model file, a variant, or config=")
    from convmlp import VARIANTS

    if isinstance(source, ModelSource):
        src = source
    elif str(source).lower() in VARIANTS:
        src = ModelSource(variant=str(source).lower(), weights=Path(weights) if weights else None, pretrained=pretrained)
    else:
        src = ModelSource.of(source)
    options = RunnerOptions(device=device, precision=precision, threads=threads, shapes=as_policy(shapes))
    return _open(load_model(src, backend_name=backend, options=options), labels)


def _load_config(config: str | os.PathLike[str], *, given: bool, labels: Any) -> Model:
    """``load(config=...)``: the deployment ``tune`` wrote, run as written."""
    from . import deployconfig

    if given:
        raise OptionError("config= fixes the model, backend, precision, threads and device: give it alone "
                          "(labels= still applies)")
    check = deployconfig.load_config(config)
    loaded = load_model(deployconfig.model_source(check.config), backend_name=check.config.backend,
                        options=deployconfig.runner_options(check.config))
    loaded.notes.extend(check.warnings)
    model = _open(loaded, labels)
    model.deployment = check.config
    return model


def _open(loaded: LoadedModel, labels: Any) -> Model:
    from .modelfile.metadata import read_labels

    names = loaded.facts.labels  # what the file records (export --labels)
    if labels is not None:
        names = (read_labels(labels, loaded.num_classes or None) if isinstance(labels, (str, os.PathLike))
                 else list(labels))
        if loaded.num_classes and len(names) != loaded.num_classes:
            raise OptionError(f"labels: {len(names)} names but the model has {loaded.num_classes} classes")
    return Model(loaded, names)
