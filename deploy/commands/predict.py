"""Classify image files with any backend: top-k classes with softmax probabilities.

The model (``--engine``, ``--onnx`` or a PyTorch variant) is opened by ``deploy.loader``;
its preprocessing config comes from the model's own record (``deploy.modelfile``). One
image that cannot be read fails alone: ``predict_images`` yields an error for it and goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from convmlp.preprocess import ImageError, ResolutionLike, load_image

from ..api import Model
from ..backends import RunnerOptions
from ..classes import ClassScore, top_k
from ..errors import DeployError
from ..loader import LoadedModel, ModelSource, load_model, synthetic_note
from ..modelfile.metadata import read_labels

__all__ = [
    "ImageResult",
    "open_classifier",
    "predict_images",
    "Prediction",
    "predict_files",
]


@dataclass
class ImageResult:
    """The answer for one image file: ``top`` on success, ``error`` (one line) on failure."""

    image: str
    top: list[ClassScore] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None
    error: str | None = None
    #: what the user should know about this image's answer (one far below the model's input size)
    note: str | None = None

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
            "note": self.note,
        }


# --------------------------------------------------------------------------- opening a model


def open_classifier(
    source: ModelSource | str | os.PathLike[str],
    *,
    backend_name: str | None = None,
    options: RunnerOptions | None = None,
    purpose: str = "predict",
) -> LoadedModel:
    """``deploy.loader.load_model``, refusing a features model (``UnsupportedModel``: ``purpose`` needs a
    classifier). The runner is not active yet: use it in a ``with`` block."""
    model = load_model(source, backend_name=backend_name, options=options)
    model.facts.require_classifier(purpose)
    return model


# --------------------------------------------------------------------------- predicting


def predict_images(
    model: Model,
    images: Iterable[str | os.PathLike[str]],
    *,
    k: int = 5,
    resolution: ResolutionLike = None,
) -> Iterator[ImageResult]:
    """Top-``k`` classes of each image file, one at a time, with ``model``'s labels.

    An unreadable file, a non-image or a failed inference gives an ``ImageResult``
    with ``error`` set; the following images are still answered.
    """
    for path in images:
        name = str(path)
        try:
            image = load_image(path)
            x = model.preprocess(image, resolution)
            yield ImageResult(name, top_k(model(x)[0], k, model.labels), tuple(x.shape),
                              note=small_image_note(image.size, tuple(x.shape[2:])))
        except (ImageError, DeployError) as exc:
            msg = str(exc)
            yield ImageResult(name, error=msg if msg.startswith(name) else f"{name}: {msg}")


#: an image whose shorter side is below this fraction of the model's input side is named in a note
SMALL_IMAGE_FRACTION = 0.25


def small_image_note(image_size: tuple[int, int], input_hw: tuple[int, ...]) -> str | None:
    """A note when an image (``image_size``: width, height) is far below the model's input (``input_hw``):
    upscaling it more than 4x invents the detail the network classifies, so its answer may mean little."""
    w, h = image_size
    side = min(input_hw)
    if min(w, h) >= SMALL_IMAGE_FRACTION * side:
        return None
    return (f"the image is {w}x{h}, far below the model's {input_hw[0]}x{input_hw[1]} input: it was upscaled "
            f"{side / max(1, min(w, h)):.0f}x, so its classes may mean little")


@dataclass
class Prediction:
    """``predict``'s answer: the model, its class names (``--labels``) and one result per image."""

    model: Model
    results: list[ImageResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.info(), "results": [r.to_dict() for r in self.results]}


def predict_files(
    source: ModelSource,
    images: Iterable[str | os.PathLike[str]],
    *,
    backend_name: str | None = None,
    options: RunnerOptions | None = None,
    k: int = 5,
    labels: str | os.PathLike[str] | None = None,
    resolution: ResolutionLike = None,
    on_note: Callable[[str], None] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
) -> Prediction:
    """``predict``: open the classifier, check ``labels`` and the memory a fixed ``resolution`` needs
    (before any image), then answer each image (``on_result`` as each is done)."""
    from ..resources import check_fits

    loaded = open_classifier(source, backend_name=backend_name, options=options)
    names = read_labels(labels, loaded.num_classes) if labels is not None else loaded.facts.labels
    if isinstance(resolution, tuple):
        check_fits(loaded.variant, [(1, *resolution)], device=loaded.runner.device)
    notes = loaded.notes + ([synthetic_note([loaded.facts.name])] if loaded.facts.synthetic else [])
    for note in notes:
        if on_note is not None:
            on_note(note)
    with Model(loaded, names) as model:
        answer = Prediction(model)
        for res in predict_images(model, images, k=k, resolution=resolution):
            answer.results.append(res)
            if on_result is not None:
                on_result(res)
    return answer
