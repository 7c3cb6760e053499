"""Atomic artifact writes, used by every command that writes files.

A file is first written to a temporary name in its target's folder (same
filesystem), then renamed over the target with ``os.replace``: a failed run
never leaves half an artifact or clobbers a good one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["staged_path", "stage_bytes", "stage_copy", "atomic_write_bytes", "atomic_write_json", "atomic_savefig", "unwritable"]


def staged_path(final: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A fresh, empty temp file next to ``final``, with the usual (umask) permissions."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600
    return Path(name)


def stage_bytes(data: bytes, final: str | os.PathLike[str]) -> Path:
    """Write ``data`` (flushed to disk) to a temp file next to ``final``; return the temp path."""
    tmp = staged_path(final)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def stage_copy(src: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Copy ``src`` to a temp file next to ``final``; return the temp path."""
    tmp = staged_path(final)
    try:
        shutil.copyfile(src, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically."""
    tmp = stage_bytes(data, path)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_savefig(fig: Any, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Save a matplotlib figure to ``path`` through a temporary file beside it (its format from the suffix)."""
    target = Path(path)
    tmp = staged_path(target, suffix=target.suffix or ".png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def unwritable(folder: str | os.PathLike[str]) -> str | None:
    """Why no new file can be made in ``folder`` (read-only, ``/proc``, ``/sys``), or None: a temporary
    file is made there and removed."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as exc:
        return f"folder {folder} takes no new file ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None
