"""PyTorch eager (or ``torch.compile``) runner: the reference every graph is checked against."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import BackendUnavailable
from .base import Runner

__all__ = ["TorchRunner"]


class TorchRunner(Runner):
    """Runs a ``ConvMLP`` module on CPU or CUDA, in float32 or float16 (autocast-free, cast weights)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        compile: bool = False,
        output_names: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("--device cuda: this PyTorch has no CUDA device")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and device == "cpu":
            raise BackendUnavailable("fp16 PyTorch runs need --device cuda")
        self.model = model
        self.device = device
        self.precision = precision
        self.compile = compile
        self.threads = threads
        self._threads_before: int | None = None
        features = bool(getattr(model, "features_only", False))
        self._output_names = output_names or (["f1", "f2", "f3", "f4"] if features else ["logits"])
        self.name = f"torch[{device},{precision}{',compile' if compile else ''}]"
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._fn: Any = None
        self._out: tuple[torch.Tensor, ...] = ()

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    def activate(self) -> None:
        if self.threads:  # torch's thread count is process-wide: set for this runner's life, then restored
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self.model.eval().to(device=self.device, dtype=self._dtype)
        self._fn = torch.compile(self.model) if self.compile else self.model
        if self.device == "cuda":
            self.stream = torch.cuda.current_stream()

    def deactivate(self) -> None:
        self._fn = None
        self._out = ()
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def load_input(self, x: Any) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.to(device=self.device, dtype=self._dtype, non_blocking=True)

    def run(self, handle: torch.Tensor) -> None:
        with torch.inference_mode():
            out = self._fn(handle)
        self._out = out if isinstance(out, tuple) else (out,)

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def fetch(self) -> dict[str, np.ndarray]:
        return {
            name: t.detach().float().cpu().numpy() for name, t in zip(self._output_names, self._out, strict=True)
        }
