"""The two kinds of expected failure, one base each; the CLI maps them to exit codes once, at its group.

- ``OptionError`` (exit 2): what the user asked for cannot be done with these inputs (contradicting
  options, a model file of the wrong kind for the command, a request that cannot fit in memory). It
  subclasses ``ValueError``, so library callers can treat it as a bad argument.
- ``DeployError`` (exit 1): a file, runtime or machine fails at run time (unreadable or garbage file,
  missing runtime, engine built for another GPU).

``convmlp.CheckpointError`` (a checkpoint that does not fit the model) is the model package's own and
also exits 1; the model package knows nothing of the deployment stack above it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["OptionError", "DeployError", "BackendUnavailable", "UnsupportedModel", "one_line", "words"]


class OptionError(ValueError):
    """A request that cannot be honoured as given (CLI exit 2); the message says what to change."""


class DeployError(RuntimeError):
    """A model file, engine, runtime or request is unusable (CLI exit 1); the message says why."""


class BackendUnavailable(DeployError):
    """An optional runtime (TensorRT, CUDA, onnxruntime, OpenVINO) is not installed here."""


class UnsupportedModel(OptionError):
    """A model file that is not a ConvMLP classifier or backbone, or not the kind a command needs (exit 2)."""


def one_line(what: BaseException | str, limit: int = 240) -> str:
    """The first non-empty line of an error (or text), cut at a word boundary to ``limit`` characters with
    `` ...`` when cut: never mid-word, never a traceback."""
    text = str(what)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line and isinstance(what, BaseException):
        line = type(what).__name__
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


def words(items: Iterable[str], last: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``: names for a message."""
    items = list(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1] if len(items) > 1 else "".join(items)
