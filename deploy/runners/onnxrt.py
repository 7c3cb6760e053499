"""onnxruntime runner (CPU, CUDA or TensorRT execution provider).

``exact`` (the default) turns off the one graph rewrite of onnxruntime that changes what a Q/DQ graph
computes: ``WeightBiasQuantization`` quantizes the float bias of a Conv/Gemm fed by DequantizeLinear to
INT32 with scale = input scale x weight scale. In the TensorRT layout (INT8 + FP16, FP16 scales) that
product is formed in FP16 and can underflow (below 6.1e-5), which wrecks the layer; TensorRT keeps the
bias in floating point. Every check of numerics (export's gates, validate, per-layer, evaluate, predict)
runs exact; benchmark sessions keep onnxruntime's defaults (``exact=False``). Measured on ConvMLP graphs
in ``benchmarks/ort_weight_bias_quantization.py``.

Shapes: one session answers every input size (the graphs are dynamic in batch, height and width); the
runner keeps nothing per size, so its shape policy is always ``dynamic`` and a ``static`` one or
specialisation settings (``deploy.shapes.ShapePolicy``) do not apply (``shape_stats()`` says so).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, DeployError
from .base import Runner

__all__ = ["OnnxRuntimeRunner", "available_providers", "default_providers", "NUMERICS_PASSES"]

#: distinct input sizes remembered for counting first sights (a random stream must not grow memory)
_MAX_TRACKED = 4096
#: onnxruntime graph rewrites that change a graph's numerics (turned off where numerics are checked)
NUMERICS_PASSES = ("WeightBiasQuantization",)

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install 'convmlp-deploy[cpu]' (or [gpu] for onnxruntime-gpu)"
        ) from None
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers ([] if it is not installed)."""
    try:
        return list(_ort().get_available_providers())
    except BackendUnavailable:
        return []


def default_providers() -> list[str]:
    """CUDA when this onnxruntime has it, else CPU (never TensorRT implicitly)."""
    have = available_providers()
    if "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file with onnxruntime. ``providers``: names or aliases (cpu, cuda, tensorrt)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        exact: bool = True,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.exact = exact
        wanted = [_PROVIDER_ALIASES.get(p.lower(), p) for p in (providers or default_providers())]
        have = available_providers()
        missing = [p for p in wanted if p not in have]
        if missing:
            raise BackendUnavailable(
                f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(have) or 'none'})"
            )
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")
        self.providers = wanted
        self.threads = threads
        self.device = "cpu" if wanted[0] == "CPUExecutionProvider" else "cuda"
        short = wanted[0].removesuffix("ExecutionProvider")
        self.name = f"onnxruntime[{short}]"
        self.session: Any = None
        self._out: list[np.ndarray] = []
        self._input_name = "input"
        self._input_type = "tensor(float)"
        #: distinct sizes sent (for ``shape_stats``' first sights): shapes only, at most ``_MAX_TRACKED``
        self._seen: set[tuple[int, ...]] = set()
        self._first_sights = 0

    @property
    def output_names(self) -> list[str]:
        if self.session is None:
            raise DeployError("onnxruntime runner is not active")
        return [o.name for o in self.session.get_outputs()]

    def activate(self) -> None:
        ort = _ort()
        if not self.path.is_file():
            raise DeployError(f"ONNX file not found: {self.path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers,
                                                disabled_optimizers=list(NUMERICS_PASSES) if self.exact else [])
        except Exception as exc:  # onnxruntime raises its own classes for bad files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DeployError(f"{self.path}: onnxruntime cannot load it ({first[:200]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, found {len(inputs)}")
        self._input_name = inputs[0].name
        self._input_type = inputs[0].type
        self._seen = set()

    def deactivate(self) -> None:
        self.session = None
        self._out = []

    def load_input(self, x: np.ndarray) -> np.ndarray:
        dtype = np.float16 if self._input_type == "tensor(float16)" else np.float32
        return np.ascontiguousarray(x, dtype=dtype)

    def shape_stats(self) -> dict[str, Any]:
        """The shape policy as it runs here: one dynamic session, no specialisations, no disk cache."""
        return {"policy": "dynamic", "specializations": 0, "specialized": [], "compiles": 0, "made": 0,
                "evicted": 0, "pending": 0, "first_sights": self._first_sights, "cache_bytes": 0}

    def run(self, handle: np.ndarray) -> None:
        shape = tuple(int(d) for d in handle.shape)
        if shape not in self._seen:
            self._first_sights += 1
            if len(self._seen) < _MAX_TRACKED:
                self._seen.add(shape)
        try:
            self._out = self.session.run(None, {self._input_name: handle})
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DeployError(f"onnxruntime failed on input {list(handle.shape)}: {first[:200]}") from None

    def fetch(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self.output_names, self._out, strict=True)}
