"""The one face every backend shows (after Polygraphy's runners).

A runner is a context manager. ``infer(x)`` takes an NCHW float32 numpy batch and
returns ``{output_name: numpy array}`` on the host. The same call is split into
``load_input`` (host -> where the backend reads), ``run`` (launch, may be async),
``synchronize`` and ``fetch`` (-> host) so that the benchmark can time each part
and keep inputs resident. CUDA backends enqueue on ``self.stream`` (a
``torch.cuda.Stream``), on which the benchmark records CUDA events.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..errors import DeployError

__all__ = ["Runner", "check_image_batch"]

MIN_SIDE = 32


def check_image_batch(x: Any) -> None:
    """Refuse what no ConvMLP graph takes: not rank 4, not 3 channels, sides < 32, non-float."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        raise DeployError(f"input must be a 4-D NCHW batch, got shape {list(shape)}")
    if shape[1] != 3:
        raise DeployError(f"input must have 3 channels (NCHW), got {shape[1]} in shape {list(shape)}")
    if min(shape[2], shape[3]) < MIN_SIDE:
        raise DeployError(f"input height and width must be >= {MIN_SIDE}, got {shape[2]}x{shape[3]}")
    if shape[0] < 1:
        raise DeployError("input batch is empty")
    dtype = str(getattr(x, "dtype", ""))
    if "float" not in dtype:
        raise DeployError(f"input must be floating point (float32 or float16), got {dtype}")


class Runner(ABC):
    """Base class: subclasses implement ``activate``, ``load_input``, ``run``, ``fetch``."""

    name: str = "runner"
    #: "cpu" or "cuda"
    device: str = "cpu"
    #: the torch.cuda.Stream work is enqueued on, or None for host-synchronous backends
    stream: Any = None
    #: host-synchronous runners that take queries from several threads at once, each thread's
    #: ``load_input``/``run``/``fetch`` its own (the benchmark's ``--streams`` on CPU)
    concurrent: bool = False

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_time: float | None = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> Runner:
        self.activate()
        self.is_active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.is_active = False
        self.deactivate()

    @abstractmethod
    def activate(self) -> None:
        """Load the model / create the session."""

    def deactivate(self) -> None:  # noqa: B027 - optional hook
        """Release what ``activate`` took."""

    # -- metadata ----------------------------------------------------------------
    @property
    @abstractmethod
    def output_names(self) -> list[str]:
        """Names of the outputs, in order."""

    def check_input(self, x: Any) -> None:
        """Raise ``DeployError`` for an input this runner cannot take."""
        check_image_batch(x)

    # -- the split inference call --------------------------------------------------
    @abstractmethod
    def load_input(self, x: np.ndarray) -> Any:
        """Place ``x`` where the backend reads it; returns a handle for ``run``."""

    @abstractmethod
    def run(self, handle: Any) -> None:
        """Launch inference on a loaded input (may return before it finishes)."""

    def synchronize(self) -> None:  # noqa: B027 - optional hook
        """Wait for launched work (no-op for host-synchronous backends)."""

    @abstractmethod
    def fetch(self) -> dict[str, np.ndarray]:
        """Outputs of the last ``run`` on the host, float32."""

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Check, load, run, wait and fetch; records ``last_inference_time`` (seconds)."""
        if not self.is_active:
            raise DeployError(f"{self.name} runner used outside its 'with' block")
        self.check_input(x)
        start = time.perf_counter()
        self.run(self.load_input(x))
        self.synchronize()
        out = self.fetch()
        self.last_inference_time = time.perf_counter() - start
        return out
