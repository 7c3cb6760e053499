"""TensorRT runner: loads a plan file (+ its sidecar manifest) and runs it on a CUDA stream.

PyTorch provides the CUDA memory and the stream (``self.stream``, a
``torch.cuda.Stream``; its raw handle goes to ``execute_async_v3``), so the
benchmark can record CUDA events around ``load_input`` / ``run`` / ``fetch``.

Thread safety: one runner owns one execution context, which TensorRT does not
allow to be used from two threads at once, so ``infer`` holds a per-runner lock.
For parallel inference, create one runner per thread (each deserializes the plan
and has its own context, buffers and stream).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailable, DeployError
from ..trt.manifest import EngineManifest, check_compatible, read_manifest
from ..trt.profiles import Shape, ShapeProfile, format_shape, select_profile
from ..trt.version import cuda_device, import_tensorrt
from .base import Runner, check_image_batch

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

__all__ = ["TensorRTRunner", "Engine", "LoadedInput"]


@dataclass(frozen=True)
class LoadedInput:
    """Handle returned by ``load_input``: the shape now in the input buffer and the profile to run it with."""

    shape: Shape
    profile: int


class TensorRTRunner(Runner):
    """Runs a TensorRT engine built by ``convmlp-deploy build`` (or any plan, with ``check_compat=False``).

    ``cuda_graph=True`` captures one CUDA graph per input shape on first use and
    replays it afterwards (fixed shapes in a serving loop launch faster).
    ``check_compat=False`` skips the sidecar's GPU/TensorRT check and lets a plan
    without sidecar run (profiles are then read from the engine).
    """

    device = "cuda"

    def __init__(self, path: str | os.PathLike[str], *, cuda_graph: bool = False, check_compat: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.cuda_graph = cuda_graph
        self.check_compat = check_compat
        self.name = f"tensorrt[{self.path.name}]"
        self.manifest: EngineManifest | None = None
        self.profiles: list[ShapeProfile] = []
        self.input_name = "input"
        self._output_names: list[str] = []
        self._lock = threading.Lock()
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._buffers: dict[str, torch.Tensor] = {}  # flat, grown on demand
        self._dtypes: dict[str, torch.dtype] = {}
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._active: tuple[Shape, int] | None = None  # shape/profile the context is set up for
        self._graphs: dict[tuple[Shape, int], torch.cuda.CUDAGraph] = {}

    # -- metadata ----------------------------------------------------------------
    @property
    def output_names(self) -> list[str]:
        if not self._output_names:
            if self.manifest is not None:
                return list(self.manifest.output_names)
            raise DeployError("TensorRT runner is not active")
        return list(self._output_names)

    # -- lifecycle ---------------------------------------------------------------
    def activate(self) -> None:
        import_tensorrt()
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT engines need a CUDA device; this PyTorch sees none")
        if not self.path.is_file():
            raise DeployError(f"engine file not found: {self.path}")
        if self.check_compat:
            self.manifest = read_manifest(self.path)
            gpu_name, cc, _ = cuda_device()
            check_compatible(
                self.manifest, gpu_name=gpu_name, compute_capability=cc, tensorrt_version=str(trt.__version__)
            )
        else:
            try:
                self.manifest = read_manifest(self.path)
            except DeployError:
                self.manifest = None

        from ..trt.builder import _Messages, make_logger

        messages = _Messages()
        runtime = trt.Runtime(make_logger(messages))
        if self.manifest is not None and self.manifest.version_compatible:
            # version-compatible plans embed the lean runtime (host code); only load plans you trust
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise DeployError(
                f"TensorRT {trt.__version__} cannot load {self.path} ({'; '.join(messages.errors()[-2:]) or 'no message'})"
                "; rebuild the engine on this machine"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, the engine has {inputs}")
        self.input_name = inputs[0]
        self._output_names = outputs
        profiles = []
        for p in range(engine.num_optimization_profiles):
            lo, opt, hi = (_shape4(_dims(d)) for d in engine.get_tensor_profile_shape(self.input_name, p))
            profiles.append(ShapeProfile(lo, opt, hi))
        if self.manifest is not None and [str(p) for p in self.manifest.profiles] != [str(p) for p in profiles]:
            raise DeployError(
                f"{self.path}: the sidecar manifest lists profiles {[str(p) for p in self.manifest.profiles]} "
                f"but the engine has {[str(p) for p in profiles]}; the .json belongs to another engine"
            )
        self.profiles = profiles
        self._dtypes = {n: _torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        context = engine.create_execution_context()
        if context is None:
            raise DeployError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._runtime, self._engine, self._context = runtime, engine, context
        self.stream = torch.cuda.Stream()
        self._active = None

    def deactivate(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self._context = None
        self._engine = None
        self._runtime = None
        self._active = None

    # -- inputs --------------------------------------------------------------------
    def check_input(self, x: Any) -> None:
        check_image_batch(x)
        select_profile(self.profiles, tuple(int(d) for d in x.shape))

    def _buffer(self, name: str, numel: int) -> torch.Tensor:
        """The flat device buffer of ``name``, grown (never shrunk) to hold ``numel`` elements."""
        import torch

        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            # allocated on self.stream: the caching allocator reuses a dropped buffer only after
            # the work already queued on that stream
            with torch.cuda.stream(self.stream):
                buf = torch.empty(numel, dtype=self._dtypes[name], device="cuda")
            self._buffers[name] = buf
            self._graphs.clear()  # captured graphs point at the old addresses
            self._active = None
        return buf

    def load_input(self, x: Any) -> LoadedInput:
        """Copy ``x`` (numpy or torch, CPU or CUDA) into the engine's input buffer on ``self.stream``."""
        import torch

        shape = _shape4(x.shape)
        profile = select_profile(self.profiles, shape)
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        numel = int(np.prod(shape))
        buf = self._buffer(self.input_name, numel)
        if t.is_cuda:
            self.stream.wait_stream(torch.cuda.current_stream())  # x may still be being written
        with torch.cuda.stream(self.stream):
            buf[:numel].view(shape).copy_(t, non_blocking=True)
        return LoadedInput(shape, profile)

    # -- running --------------------------------------------------------------------
    def _prepare(self, handle: LoadedInput) -> None:
        """Select the profile, set the input shape and bind every tensor's address."""
        context = self._require_context()
        key = (handle.shape, handle.profile)
        if self._active == key:
            return
        if context.active_optimization_profile != handle.profile:
            if not context.set_optimization_profile_async(handle.profile, self.stream.cuda_stream):
                raise DeployError(f"TensorRT refused optimization profile #{handle.profile}")
        if not context.set_input_shape(self.input_name, handle.shape):
            raise DeployError(
                f"TensorRT refused input shape {format_shape(handle.shape)} for profile "
                f"#{handle.profile} {self.profiles[handle.profile]}"
            )
        inp = self._buffer(self.input_name, int(np.prod(handle.shape)))
        context.set_tensor_address(self.input_name, inp.data_ptr())
        for name in self._output_names:
            shape = _dims(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise DeployError(f"TensorRT could not infer the shape of output {name!r}: {list(shape)}")
            self._out_shapes[name] = shape
            out = self._buffer(name, max(1, int(np.prod(shape))))
            context.set_tensor_address(name, out.data_ptr())
        self._active = key

    def _require_context(self) -> trt.IExecutionContext:
        if self._context is None:
            raise DeployError("TensorRT runner is not active (use it in a 'with' block)")
        return self._context

    def run(self, handle: LoadedInput) -> None:
        """Enqueue inference on ``self.stream`` (returns before it finishes)."""
        import torch

        context = self._require_context()
        self._prepare(handle)
        key = (handle.shape, handle.profile)
        if self.cuda_graph:
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._capture(context, key)
            with torch.cuda.stream(self.stream):
                graph.replay()
            return
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise DeployError(f"TensorRT failed to enqueue inference for input {format_shape(handle.shape)}")

    def _capture(self, context: trt.IExecutionContext, key: tuple[Shape, int]) -> torch.cuda.CUDAGraph:
        import torch

        # one plain launch first: TensorRT finishes shape-dependent setup outside capture
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise DeployError(f"TensorRT failed to enqueue inference for input {format_shape(key[0])}")
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise DeployError("TensorRT failed to enqueue inference during CUDA graph capture")
        self._graphs[key] = graph
        return graph

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def fetch(self) -> dict[str, np.ndarray]:
        """Copy the last run's outputs to the host (on ``self.stream``) as float32."""
        import torch

        if self._active is None:
            raise DeployError("fetch() before run(): nothing to fetch")
        host: dict[str, torch.Tensor] = {}
        with torch.cuda.stream(self.stream):
            for name in self._output_names:
                shape = self._out_shapes[name]
                numel = int(np.prod(shape))
                host[name] = self._buffers[name][:numel].view(shape).to("cpu", non_blocking=True)
        self.stream.synchronize()
        return {name: t.float().numpy() for name, t in host.items()}

    def infer(self, x: Any) -> dict[str, np.ndarray]:
        """``Runner.infer`` under this runner's lock; ``x`` may be numpy or a torch tensor (CPU or CUDA)."""
        with self._lock:
            return super().infer(x)


Engine = TensorRTRunner


def _shape4(dims: Any) -> Shape:
    values = tuple(int(d) for d in dims)
    if len(values) != 4:
        raise DeployError(f"expected a 4-D NCHW shape, got {list(values)}")
    return values[0], values[1], values[2], values[3]


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    import tensorrt as trt
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.INT8: torch.int8,
        trt.DataType.UINT8: torch.uint8,
        trt.DataType.BOOL: torch.bool,
    }
    if dtype not in table:
        raise DeployError(f"engine tensor type {dtype.name} is not supported by this runner")
    return table[dtype]
