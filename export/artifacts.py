"""Atomic artifact writes: temp file in the same folder, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_save_onnx", "staged_path"]


def staged_path(final: Path) -> Path:
    """A fresh temp path next to ``final`` (same filesystem, so ``os.replace`` is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual mode
    return Path(name)


def atomic_write_bytes(data: bytes, final: Path) -> Path:
    tmp = staged_path(final)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def atomic_write_json(obj: Any, final: Path) -> Path:
    return atomic_write_bytes((json.dumps(obj, indent=2) + "\n").encode(), final)


def atomic_save_onnx(proto: onnx.ModelProto, final: Path) -> Path:
    """Save a graph (< 2 GiB, single file) atomically."""
    return atomic_write_bytes(proto.SerializeToString(), final)
