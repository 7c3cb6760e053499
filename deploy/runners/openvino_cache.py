"""OpenVINO's on-disk model cache, bounded in bytes: where it lives, what in it is ours, and pruning.

OpenVINO writes one compiled blob per (model, shape, device config) into ``CACHE_DIR`` (~36 MB for
ConvMLP-S). This tool gives each precision hint its own folder (``precision-fp32``...: OpenVINO's cache
key leaves the hint out) under ``default_cache_dir()``, and prunes only the regular files directly in
those folders, least recently used first, to the shape policy's ``cache_bytes``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CacheWarning", "default_cache_dir", "cache_files", "prune_cache", "snapshot", "is_blob", "LOW_SPACE"]

#: how every blob OpenVINO's cache writes begins (a file that does not is not one of its entries)
BLOB_HEADER = b'<?xml version="1.0"?><compiled_blob'
#: a compile that added nothing to a cache folder with less free space than this is named a full disk
LOW_SPACE = 64 * 1024**2


class CacheWarning(UserWarning):
    """The on-disk model cache could not be used (full disk, unusable entry); answers are unaffected."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/convmlp-deploy/openvino`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convmlp-deploy" / "openvino"


def cache_files(root: Path) -> list[tuple[Path, os.stat_result]]:
    """The files of the cache under ``root``: regular files directly in its ``precision-*`` folders (the
    folders this tool names; nothing else there is counted or touched)."""
    out: list[tuple[Path, os.stat_result]] = []
    try:
        folders = [d for d in root.iterdir() if d.name.startswith("precision-") and d.is_dir() and not d.is_symlink()]
    except FileNotFoundError:
        return out
    for d in folders:
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for e in entries:
            try:
                if e.is_file(follow_symlinks=False):
                    out.append((Path(e.path), e.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # another process pruned it meanwhile
    return out


def prune_cache(root: Path, bound: int) -> tuple[int, list[Path]]:
    """Delete the least recently used files of ``cache_files(root)`` (by last access or write time, the
    later) until they hold at most ``bound`` bytes. Returns (the bytes left, the files removed)."""
    files = sorted(cache_files(root), key=lambda f: max(f[1].st_atime, f[1].st_mtime))
    total = sum(st.st_size for _, st in files)
    removed: list[Path] = []
    for path, st in files:
        if total <= bound:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        total -= st.st_size
        removed.append(path)
    return total, removed


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (inode, mtime ns, size) of the files in ``folder`` ({} when it does not exist)."""
    try:
        return {e.name: (e.inode(), e.stat().st_mtime_ns, e.stat().st_size)
                for e in os.scandir(folder) if e.is_file(follow_symlinks=False)}
    except FileNotFoundError:
        return {}


def is_blob(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(BLOB_HEADER)) == BLOB_HEADER
    except OSError:
        return False
