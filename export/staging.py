"""Where an export writes: the artifacts' final names, the output folder (created, locked, cleaned of what
a killed run left) and the staging area, whose files sit beside their final names and are renamed into
place together only when every graph of the run passed, so a failed run never replaces a good artifact.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy.artifacts import staged_path
from deploy.modelfile.ir import ir_bin_path, is_ir

from .errors import ExportError, Interrupted
from .openvino import ir_name

__all__ = [
    "IR_OF", "Staging", "artifact_paths", "stale_artifacts", "check_output_dir", "exclusive", "signals_unwind",
    "signals_deferred", "remove_stale_temp_files", "remove_if_empty",
]

#: the graphs an OpenVINO IR is written for (the FP16 graph's casts are TensorRT's business;
#: OpenVINO takes FP16 as a run-time precision of the FP32 IR)
IR_OF = ("fp32", "int8", "features")

#: the signals an export unwinds on (its clean-up runs, exit 128 + the signal's number)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def artifact_paths(variant: str, output_dir: Path) -> dict[str, Path]:
    """Every file ``export`` may write for ``variant``: graph name (or ``report``) -> path."""
    stem = f"convmlp_{variant}"
    graphs = {
        "fp32": output_dir / f"{stem}.onnx",
        "fp16": output_dir / f"{stem}.fp16.onnx",
        "int8": output_dir / f"{stem}.int8.onnx",
        "features": output_dir / f"{stem}.features.onnx",
    }
    irs = {f"{name}.openvino": output_dir / ir_name(graphs[name].name) for name in IR_OF}
    return {**graphs, **irs, "report": output_dir / f"{stem}.report.json"}


def stale_artifacts(variant: str, output_dir: Path, written: Sequence[str]) -> list[Path]:
    """Graphs of ``variant`` in ``output_dir`` that a run writing ``written`` (fp32, fp16...) did not write:
    left from an earlier export, and not described by the new report."""
    stale = []
    for name, p in artifact_paths(variant, output_dir).items():
        if name == "report" or name in written:
            continue
        stale += [f for f in ((p, ir_bin_path(p)) if is_ir(p) else (p,)) if f.exists()]
    return stale


class Staging:
    """The run's staged files (graph name -> temp file beside its final name) and staged IR folders (an
    IR is two files). ``commit`` renames them into place; ``close`` removes whatever is still staged."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self.files: dict[str, Path] = {}
        self.folders: list[Path] = []

    def __getitem__(self, name: str) -> Path:
        return self.files[name]

    def write(self, name: str, data: bytes) -> Path:
        """Stage ``data`` as graph ``name`` (again: its staged file is overwritten)."""
        if name not in self.files:
            self.files[name] = staged_path(self.paths[name])
        self.files[name].write_bytes(data)
        return self.files[name]

    def scratch(self, name: str) -> Path:
        """A fresh temp file beside graph ``name``'s (for a candidate the caller writes and removes)."""
        return staged_path(self.paths[name])

    def folder(self, name: str) -> Path:
        """A fresh staging folder beside graph ``name``'s final path (for the two files of an IR)."""
        final = self.paths[name]
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        self.folders.append(folder)
        return folder

    def add(self, name: str, path: Path) -> None:
        """Record ``path`` (inside one of this area's folders) as graph ``name``'s staged file."""
        self.files[name] = path

    def commit(self, graphs: Sequence[Any]) -> None:
        """Fill in each graph's (``GraphResult``) sha256 and size and rename it into place; an IR's ``.bin``
        first, so the new ``.xml`` never meets an old ``.bin``."""
        from convmlp.weights import file_sha256

        for g in graphs:
            staged = self.files[g.name]
            g.sha256 = file_sha256(staged)
            g.size_bytes = staged.stat().st_size
            if g.weights_path is not None:
                tmp_bin = ir_bin_path(staged)
                g.weights_sha256 = file_sha256(tmp_bin)
                g.size_bytes += tmp_bin.stat().st_size
                os.replace(tmp_bin, g.weights_path)
            os.replace(staged, g.path)
            del self.files[g.name]

    def close(self) -> None:
        for tmp in self.files.values():
            tmp.unlink(missing_ok=True)
        self.files.clear()
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.folders.clear()


def check_output_dir(path: Path) -> list[Path]:
    """Create ``path`` if needed and check it is writable; return the folders this created (deepest last)."""
    missing = [p for p in [path, *path.parents] if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = staged_path(path / ".write-test")
        probe.unlink()
    except OSError as exc:
        remove_if_empty(missing)
        raise ExportError(f"output directory {path} is not writable ({exc.strerror or exc})") from None
    return missing


def remove_if_empty(created: list[Path]) -> None:
    """Take back the folders a failed run created, if nothing else was put in them."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``flock`` on the folder itself: nothing is left behind), so
    that two exports never write into one folder at once; ``ExportError`` when another holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export is writing into {folder}: wait for it to finish, or give another "
                              "--output-dir") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def signals_unwind() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` (a ``SystemExit`` of 130 / 143) while the export runs,
    so that its clean-up runs: staged files and folders, and the quantizer's temporary folders, are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, unwind) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the artifacts are renamed into place (they arrive afterwards), so
    that an interrupted run leaves either the old set of artifacts or the new one with its report."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """This tool's own staged files and folders (``.convmlp_*.tmp``) in ``folder``, left by an export that was
    killed (SIGKILL, power loss); called with the folder's lock held, so none of them is in use."""
    removed = []
    for path in sorted(folder.glob(".convmlp_*.tmp")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
