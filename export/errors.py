"""Errors the exporter raises for bad input or a failed step (bases in ``deploy.errors``)."""

import signal

from deploy.errors import DeployError, OptionError

__all__ = ["ExportError", "ExportOptionError", "Interrupted"]


class ExportError(DeployError):
    """Export, simplification or FP16 conversion could not produce a valid graph (CLI exit 1)."""


class ExportOptionError(OptionError):
    """An option the chosen exporter cannot honour, such as an opset outside its range (CLI exit 2)."""


class Interrupted(SystemExit):
    """The export was stopped by a signal (SIGINT, SIGTERM) and cleaned up: exit 128 + the signal's number
    (130, 143), as a shell reports a process that a signal ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name
