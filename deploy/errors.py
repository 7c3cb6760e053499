"""Errors of the runtime side (CLI exit code 1)."""


class DeployError(RuntimeError):
    """A model file, engine, runtime or request is unusable; the message says why."""


class BackendUnavailable(DeployError):
    """An optional runtime (TensorRT, CUDA, onnxruntime) is not installed here."""
