"""The workload a tuned deployment must serve: a stream of input sizes (``tune --shapes``).

- ``224`` or ``320x480``: one fixed size;
- ``cycle:224,320x480``: these sizes in turn;
- ``random:64-512``: height and width drawn uniformly in [64, 512], a fixed draw of ``RANDOM_DRAWS``
  sizes from a seeded generator, so that every candidate sees the same stream;
- a file: one size per line (``#`` comments), in turn.

The stream forms are ``benchmark --shapes``'s own parser (``deploy.commands.bench.stream``), so the two
commands read a workload the same way; a fixed size is ``deploy.shapes.parse_size``. A size that names its
own batch is refused: the batch is ``--batch``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import OptionError
from ...shapes import parse_size

__all__ = ["RANDOM_DRAWS", "Workload", "parse_workload"]

#: sizes drawn for a ``random:`` stream (each timed query takes the next one, in turn)
RANDOM_DRAWS = 16


@dataclass(frozen=True)
class Workload:
    """A named stream of (height, width) sizes, served in turn."""

    spec: str
    kind: str  # fixed, cycle, random, file
    sizes: tuple[tuple[int, int], ...]

    @property
    def distinct(self) -> tuple[tuple[int, int], ...]:
        return tuple(dict.fromkeys(self.sizes))

    def megapixels(self) -> float:
        """Mean megapixels of one image of the stream."""
        return sum(h * w for h, w in self.sizes) / len(self.sizes) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "sizes": [f"{h}x{w}" for h, w in self.sizes]}


def _size(text: str) -> tuple[int, int]:
    b, h, w = parse_size(text, option="--shapes")
    if b != 1:
        raise OptionError(f"--shapes {text!r}: give sizes without a batch (the batch is --batch)")
    return h, w


def parse_workload(spec: str, *, seed: int = 0) -> Workload:
    """``spec`` as a ``Workload``; ``OptionError`` naming ``--shapes`` otherwise."""
    text = str(spec).strip()
    low = text.lower()
    from ..bench.stream import parse_stream, read_shapes_file

    if low.startswith(("random:", "cycle:")) or Path(text).is_file():
        s = (read_shapes_file(text) if Path(text).is_file() and not low.startswith(("random:", "cycle:"))
             else parse_stream(text, requests=RANDOM_DRAWS if low.startswith("random:") else None, seed=seed))
        drawn = s.draw() if s.kind == "random" else list(s.sizes)
        if any(b != 1 for b, _, _ in drawn):
            raise OptionError(f"--shapes {text!r}: give sizes without a batch (the batch is --batch)")
        return Workload(text, s.kind, tuple((h, w) for _, h, w in drawn))
    if re.fullmatch(r"[\dx]+", low):
        return Workload(text, "fixed", (_size(low),))
    raise OptionError(f"--shapes {spec!r}: give a size (224, 320x480), cycle:224,320x480, random:64-512 or a file "
                      "of sizes")

