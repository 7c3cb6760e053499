"""Runners: one face (``with runner: runner.infer(x)``) for PyTorch, onnxruntime and TensorRT.

Imports are lazy per backend: ``deploy.runners.tensorrt`` needs TensorRT, the others do not.
"""

from .base import Runner, check_image_batch

__all__ = ["Runner", "check_image_batch"]
