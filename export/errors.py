"""Errors the exporter raises for bad input or a failed step (CLI exit code 1)."""


class ExportError(RuntimeError):
    """Export, simplification or FP16 conversion could not produce a valid graph."""
