"""Errors the exporter raises for bad input or a failed step."""


class ExportError(RuntimeError):
    """Export, simplification or FP16 conversion could not produce a valid graph (CLI exit 1)."""


class ExportOptionError(ExportError):
    """An option the chosen exporter cannot honour, such as an opset outside its range (CLI exit 2)."""
