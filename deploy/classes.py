"""Scores of a classifier: softmax and the top-k classes of a logits vector, labelled when the model's
class names are known. ``deploy.load().classify``, ``predict``, ``evaluate`` and the served image model
all rank classes here."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DeployError

__all__ = ["ClassScore", "softmax", "top_k"]


@dataclass(frozen=True)
class ClassScore:
    """One of the top-k classes of an image."""

    rank: int
    index: int
    probability: float
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)



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
