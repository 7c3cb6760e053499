"""The model's I/O contract: one object feeds the ONNX exporter, the TensorRT
profile builder, the Triton config writer and every runner, so a tensor name or
a dynamic axis is typed exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .model import ARCHS

__all__ = ["TensorSpec", "NamedIO", "IOSpec", "io_spec", "INPUT_NAME"]

INPUT_NAME = "input"


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor; a ``str`` dim is dynamic and named (``batch``, ``height``...)."""

    name: str
    dims: tuple[int | str, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.dims) if isinstance(d, str)}


class NamedIO:
    """The names of a model's ``inputs`` and ``outputs`` (tensors with a ``name``), in order."""

    inputs: Sequence[Any]
    outputs: Sequence[Any]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True)
class IOSpec(NamedIO):
    """Inputs and outputs of one exported ConvMLP graph."""

    variant: str
    kind: str  # "classifier" or "features"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s ``dynamic_axes`` argument."""
        return {t.name: t.dynamic_axes for t in self.inputs + self.outputs if t.dynamic_axes}


def io_spec(variant: str, *, features: bool = False, num_classes: int = 1000) -> IOSpec:
    """The I/O spec of ConvMLP-``variant`` as a classifier or as the F1..F4 backbone."""
    arch = ARCHS[variant]
    image = TensorSpec(INPUT_NAME, ("batch", 3, "height", "width"))
    if not features:
        return IOSpec(variant, "classifier", (image,), (TensorSpec("logits", ("batch", num_classes)),))
    chans = (arch.channels, *arch.dims)
    outs = tuple(
        TensorSpec(f"f{i + 1}", ("batch", c, f"f{i + 1}_height", f"f{i + 1}_width"))
        for i, c in enumerate(chans)
    )
    return IOSpec(variant, "features", (image,), outs)
