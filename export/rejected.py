"""Graphs that failed their gate, kept for inspection: ``<output>/rejected/<name>``, never at a final
name, with the FP32 graph they were checked against beside them (so ``validate --per-layer`` runs on
them as they are), and where their error first jumps. The next export of the variant into the folder
removes them (``remove_rejected``, called under the export's lock)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["REJECTED_DIR", "Rejected", "keep_rejected", "remove_rejected"]

#: where a graph that failed its gate is kept (``rejected/<its name>``); the next export of the variant
#: into the folder removes it
REJECTED_DIR = "rejected"


@dataclass
class Rejected:
    """A graph that failed its gate, kept for inspection in ``rejected/`` beside the output (never at its
    final name), and where its error first jumps (``deploy.layer_errors``; None: no jump, or FP32)."""

    name: str
    path: Path
    reference: Path | None  # the FP32 graph it was made from, kept beside it (for validate --per-layer)
    first_jump: Any = None  # deploy.layer_errors.LayerError

    def to_dict(self) -> dict[str, Any]:
        j = self.first_jump
        return {"path": str(self.path), "reference": str(self.reference) if self.reference else None,
                "first_jump": None if j is None else {"layer": j.node, "op": j.op, "rel_l2": j.rel_l2}}


def remove_rejected(folder: Path, variant: str) -> list[Path]:
    """The graphs of ``variant`` an earlier export kept in ``folder/rejected`` (and the folder, once empty)."""
    kept = folder / REJECTED_DIR
    if not kept.is_dir() or kept.is_symlink():
        return []
    removed = [p for p in sorted(kept.glob(f"convmlp_{variant}.*")) if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        kept.rmdir()
    return removed


def keep_rejected(
    output_dir: Path, variant: str, graphs: Sequence[Any], staged: dict[str, Path], checked_on: dict[str, list],
    log: Callable[[str], None],
) -> list[Rejected]:
    """Move each ONNX graph (``export.pipeline.GraphResult``; ``staged``: its staged file) that failed its gate to ``rejected/`` (with, for a reduced-precision one, the
    staged FP32 graph it was made from beside it) and find where its error first jumps."""
    from deploy.layer_errors import compare_layers

    folder = output_dir / REJECTED_DIR
    kept: list[Rejected] = []
    for g in graphs:
        if g.validation.passed or g.name not in ("fp32", "fp16", "int8", "features") or g.name not in staged:
            continue
        folder.mkdir(exist_ok=True)
        path = folder / g.path.name
        os.replace(staged.pop(g.name), path)
        reference = None
        if g.precision != "fp32" and "fp32" in staged:
            reference = folder / f"convmlp_{variant}.onnx"
            shutil.copyfile(staged["fp32"], reference)
        item = Rejected(g.name, path, reference)
        if reference is not None:
            cases = checked_on[g.name]
            x = next((c.inputs[:1] for c in cases if c.photos), cases[0].inputs[:1])  # a photograph if any
            with contextlib.suppress(Exception):  # a diagnosis that cannot run must not hide the failure
                item.first_jump = compare_layers(path, reference, x, precision=g.precision).first_jump
        log(f"{g.name}: failed its gate; kept for inspection as {path}")
        kept.append(item)
    return kept
