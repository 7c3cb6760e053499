"""Errors the exporter raises for bad input or a failed step (bases in ``deploy.errors``)."""

from deploy.errors import DeployError, OptionError

__all__ = ["ExportError", "ExportOptionError"]


class ExportError(DeployError):
    """Export, simplification or FP16 conversion could not produce a valid graph (CLI exit 1)."""


class ExportOptionError(OptionError):
    """An option the chosen exporter cannot honour, such as an opset outside its range (CLI exit 2)."""
