"""The runtime side: what a model file is (``deploy.modelfile``), the backend table and loader,
runners (PyTorch, onnxruntime, OpenVINO, TensorRT), validation against PyTorch, TensorRT builds
(``deploy.trt``), benchmarks (``deploy.commands.bench``), Triton and ``serve``, ``predict``, ``evaluate``, and
the CLI's option groups and presentation.

``deploy.load(path)`` is the public API for Python services (``deploy.api``). TensorRT and CUDA are
imported lazily; this package imports on a CPU-only machine.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load", "Model"]


def __getattr__(name: str) -> Any:  # the API is imported on first use: ``import deploy.errors`` stays light
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'deploy' has no attribute {name!r}")
