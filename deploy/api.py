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
from .errors import OptionError
from .loader import LoadedModel, ModelSource, load_model, synthetic_note
from .precision import run_precision

__all__ = ["Model", "load"]


class Model:
    """A loaded ConvMLP classifier (or backbone), active until ``close()``; a context manager too."""

    def __init__(self, loaded: LoadedModel, labels: Sequence[str] | None = None) -> None:
        self._loaded = loaded
        self.labels = list(labels) if labels is not None else None
        loaded.runner.__enter__()
        self._lock = None if loaded.runner.concurrent else threading.Lock()
        self._closed = False

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
        return {**self._loaded.to_dict(), "precision": self.precision, "labels": self.labels is not None,
                "notes": self.notes}

    # -- running -----------------------------------------------------------------------
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N x classes) of a float32 NCHW batch, normalised as ``self.facts.preprocessing`` says."""
        return self.outputs(batch)[self._loaded.output_name]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (a backbone's f1..f4)."""
        if self._closed:
            raise RuntimeError(f"{self.name}: the model is closed")
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._lock is None:
            return self._loaded.runner.infer(x)
        with self._lock:
            return self._loaded.runner.infer(x)

    def preprocess(self, image: Any, resolution: Any = None) -> np.ndarray:
        """One (1, 3, H, W) batch from a PIL image, an HxWx3 uint8 array, or a file path."""
        from convmlp.preprocess import load_image, preprocess

        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        elif isinstance(image, np.ndarray):
            from PIL import Image

            image = Image.fromarray(image.astype(np.uint8), "RGB")
        return preprocess(image.convert("RGB"), self.facts.preprocessing, resolution=resolution)

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
    source: str | os.PathLike[str] | ModelSource,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    backend: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    device: str = "cpu",
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
) -> Model:
    """Open ``source``: an ONNX graph, an OpenVINO IR (``.xml``), a TensorRT engine, or a variant name
    (``"s"``, ``"m"``, ``"l"``; with ``weights``/``pretrained``, else synthetic weights).

    ``backend``: a ``deploy.backends`` name (default: the file's own); ``precision``: the run-time precision
    where the backend chooses it (OpenVINO); ``labels``: class names (a file of one name per line, or a
    list) [default: those the file records, ``export --labels``]. Raises ``OptionError``/``DeployError``
    with one line, as the CLI does.
    """
    from convmlp import VARIANTS

    from .modelfile.metadata import read_labels

    if isinstance(source, ModelSource):
        src = source
    elif str(source).lower() in VARIANTS:
        src = ModelSource(variant=str(source).lower(), weights=Path(weights) if weights else None, pretrained=pretrained)
    else:
        src = ModelSource.of(source)
    options = RunnerOptions(device=device, precision=precision, threads=threads)
    loaded = load_model(src, backend_name=backend, options=options)
    names = loaded.facts.labels  # what the file records (export --labels)
    if labels is not None:
        names = (read_labels(labels, loaded.num_classes or None) if isinstance(labels, (str, os.PathLike))
                 else list(labels))
        if loaded.num_classes and len(names) != loaded.num_classes:
            raise OptionError(f"labels: {len(names)} names but the model has {loaded.num_classes} classes")
    return Model(loaded, names)
