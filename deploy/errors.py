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

__all__ = ["OptionError", "DeployError", "BackendUnavailable", "UnsupportedModel"]


class OptionError(ValueError):
    """A request that cannot be honoured as given (CLI exit 2); the message says what to change."""


class DeployError(RuntimeError):
    """A model file, engine, runtime or request is unusable (CLI exit 1); the message says why."""


class BackendUnavailable(DeployError):
    """An optional runtime (TensorRT, CUDA, onnxruntime, OpenVINO) is not installed here."""


class UnsupportedModel(OptionError):
    """A model file that is not a ConvMLP classifier or backbone, or not the kind a command needs (exit 2)."""
