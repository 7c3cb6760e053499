"""TensorRT runner: loads a plan file (+ its sidecar manifest) and runs it on a CUDA stream.

PyTorch provides the CUDA memory and the stream (``self.stream``, a
``torch.cuda.Stream``; its raw handle goes to ``execute_async_v3``), so the
benchmark can record CUDA events around ``load_input`` / ``run`` / ``fetch``.

Thread safety: one runner owns one execution context, which TensorRT does not
allow to be used from two threads at once. Every method that touches the
context or the device buffers (``activate``, ``load_input``, ``run``, ``fetch``,
``deactivate``) holds the runner's lock, and ``infer`` holds it across the whole
load-run-fetch sequence: ``infer`` is the thread-safe way to run a query. The
split calls are each safe, but the buffers hold one query at a time, so a
``load_input`` / ``run`` / ``fetch`` sequence is meant for one thread (the
benchmark). For parallel inference, create one runner per thread (each
deserializes the plan and has its own context, buffers and stream).

CUDA graphs (``cuda_graph=True``): a captured graph replays exactly the context
state, shapes and addresses it was captured with, and TensorRT does setup work
in the first enqueue after a shape or profile change (``setOptimizationProfileAsync``:
"will trigger layer resource updates on the next call of enqueueV3"). So the
runner keeps at most one graph, for the state the context is in now: the first
run after the context was (re)configured is a plain enqueue, the next run with
the same input shape captures the graph, later ones replay it; any change of
shape, profile or buffer address drops it. A fixed-shape loop replays; shapes
that alternate run as plain enqueues, never as a stale graph.

Host code: a plan built version-compatible embeds TensorRT's lean runtime, which
is host code that runs when the plan is deserialized; TensorRT refuses it unless
``engine_host_code_allowed`` is set. The runner sets it when the sidecar written
by ``convmlp-deploy build`` says ``version_compatible``, or when the caller
passes ``allow_host_code=True`` (a plan without sidecar, e.g. from trtexec). It
never guesses from the plan: loading it is what runs the code.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailable, DeployError
from ..modelfile.engine import EngineManifest, read_manifest
from ..modelfile.profiles import Shape, ShapeProfile, format_shape, select_profile
from ..trt.version import Messages, check_compatible, cuda_device, import_tensorrt, make_logger
from .base import Runner, check_image_batch

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

__all__ = ["TensorRTRunner", "Engine", "LoadedInput", "TorchCuda", "cuda_ops"]


@dataclass(frozen=True)
class LoadedInput:
    """Handle returned by ``load_input``: the shape now in the input buffer and the profile to run it with."""

    shape: Shape
    profile: int


class TorchCuda:
    """The CUDA operations the runner needs (stream, memory, graph capture), done with PyTorch."""

    def available(self) -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def new_stream(self) -> torch.cuda.Stream:
        import torch

        return torch.cuda.Stream()

    def on(self, stream: torch.cuda.Stream) -> AbstractContextManager[Any]:
        """Make ``stream`` current for PyTorch work in a ``with`` block."""
        import torch

        return torch.cuda.stream(stream)

    def empty(self, numel: int, dtype: torch.dtype, stream: torch.cuda.Stream) -> torch.Tensor:
        """A flat device tensor allocated on ``stream`` (the caching allocator then reuses a
        dropped buffer only after the work already queued on that stream)."""
        import torch

        with torch.cuda.stream(stream):
            return torch.empty(numel, dtype=dtype, device="cuda")

    def wait_current(self, stream: torch.cuda.Stream) -> None:
        """Make ``stream`` wait for the work queued so far on PyTorch's current stream."""
        import torch

        stream.wait_stream(torch.cuda.current_stream())

    def new_graph(self) -> torch.cuda.CUDAGraph:
        import torch

        return torch.cuda.CUDAGraph()

    def capture(self, graph: torch.cuda.CUDAGraph, stream: torch.cuda.Stream) -> AbstractContextManager[Any]:
        """Capture the work enqueued on ``stream`` into ``graph``.

        Thread-local capture mode (as trtexec uses): CUDA calls of other threads (other
        runners) do not invalidate this capture; this runner's own lock keeps its stream to itself.
        """
        import torch

        return torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local")

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host copy of ``tensor``, enqueued on the current stream."""
        return tensor.to("cpu", non_blocking=True)


#: Makes the runner's CUDA operations; replaced in tests by a fake that runs on the CPU.
cuda_ops: Callable[[], TorchCuda] = TorchCuda


class TensorRTRunner(Runner):
    """Runs a TensorRT engine built by ``convmlp-deploy build`` (or any plan, with ``check_compat=False``).

    ``cuda_graph=True`` replays a CUDA graph while the input shape stays the same
    (captured on the second run of a shape; fixed shapes in a serving loop launch faster).
    ``check_compat=False`` skips the sidecar's GPU/TensorRT check and lets a plan
    without sidecar run (profiles are then read from the engine).
    ``allow_host_code``: None (default) allows the embedded host code of a
    version-compatible plan when its sidecar says it is one; True allows it
    whatever the sidecar says (for a trusted plan without sidecar); False never.
    """

    device = "cuda"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cuda_graph: bool = False,
        check_compat: bool = True,
        allow_host_code: bool | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.cuda_graph = cuda_graph
        self.check_compat = check_compat
        self.allow_host_code = allow_host_code
        self.name = f"tensorrt[{self.path.name}]"
        self.manifest: EngineManifest | None = None
        self.profiles: list[ShapeProfile] = []
        self.input_name = "input"
        self._output_names: list[str] = []
        self._lock = threading.RLock()
        self._cuda: TorchCuda | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._buffers: dict[str, torch.Tensor] = {}  # flat, grown on demand
        self._dtypes: dict[str, torch.dtype] = {}
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._active: tuple[Shape, int] | None = None  # shape/profile the context is set up for
        self._enqueued_since_setup = False  # a plain enqueue has run since the context was set up
        self._graph: torch.cuda.CUDAGraph | None = None  # captured for ``_active``, or None
        self._has_outputs = False  # the last run() completed: fetch() has something to copy

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
        with self._lock:
            self._activate()

    def _activate(self) -> None:
        import_tensorrt()
        import tensorrt as trt

        cuda = cuda_ops()
        if not cuda.available():
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

        messages = Messages()
        runtime = trt.Runtime(make_logger(messages))
        host_code = self._host_code_allowed()
        if host_code:
            # version-compatible plans embed the lean runtime (host code); only load plans you trust
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            hint = "rebuild the engine on this machine"
            if not host_code:
                hint += (
                    "; if it was built version-compatible (it embeds host code) and you trust it, "
                    "load it with allow_host_code=True"
                )
            raise DeployError(
                f"TensorRT {trt.__version__} cannot load {self.path} "
                f"({'; '.join(messages.errors()[-2:]) or 'no message'}); {hint}"
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
        context = self._create_context(engine)
        self._runtime, self._engine, self._context = runtime, engine, context
        self._cuda = cuda
        self.stream = cuda.new_stream()
        self._forget_setup()
        self._has_outputs = False

    def _host_code_allowed(self) -> bool:
        if self.allow_host_code is not None:
            return self.allow_host_code
        return self.manifest is not None and self.manifest.version_compatible

    def attach_profiler(self, profiler: trt.IProfiler | None) -> None:
        """Report every layer's time of each plain enqueue to ``profiler`` (None: stop). See
        ``deploy.commands.bench.layer_times``; CUDA-graph replays report nothing."""
        with self._lock:
            _, context = self._require()
            if profiler is None:
                context.profiler = None  # type: ignore[assignment]  # the bindings take None to detach
            else:
                context.profiler = profiler

    def _create_context(self, engine: trt.ICudaEngine) -> trt.IExecutionContext:
        """The runner's one execution context; every context is made here (attach profilers etc. here)."""
        context = engine.create_execution_context()
        if context is None:
            raise DeployError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        return context

    def _forget_setup(self) -> None:
        """The context must be set up again before the next run; a captured graph is dropped."""
        self._graph = None
        self._active = None
        self._enqueued_since_setup = False

    def deactivate(self) -> None:
        with self._lock:
            self._forget_setup()  # the graph goes before the memory it points at
            self._has_outputs = False
            self._buffers.clear()
            self._context = None
            self._engine = None
            self._runtime = None

    # -- inputs --------------------------------------------------------------------
    def check_input(self, x: Any) -> None:
        check_image_batch(x)
        select_profile(self.profiles, tuple(int(d) for d in x.shape))

    def _require(self) -> tuple[TorchCuda, trt.IExecutionContext]:
        if self._cuda is None or self._context is None:
            raise DeployError("TensorRT runner is not active (use it in a 'with' block)")
        return self._cuda, self._context

    def _buffer(self, name: str, numel: int) -> torch.Tensor:
        """The flat device buffer of ``name``, grown (never shrunk) to hold ``numel`` elements."""
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = self._require()[0].empty(numel, self._dtypes[name], self.stream)
            self._buffers[name] = buf
            self._forget_setup()  # the context and any captured graph point at the old address
        return buf

    def load_input(self, x: Any) -> LoadedInput:
        """Copy ``x`` (numpy or torch, CPU or CUDA) into the engine's input buffer on ``self.stream``."""
        import torch

        with self._lock:
            ops, _ = self._require()
            shape = _shape4(x.shape)
            profile = select_profile(self.profiles, shape)
            t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
            numel = int(np.prod(shape))
            buf = self._buffer(self.input_name, numel)
            if t.is_cuda:
                ops.wait_current(self.stream)  # x may still be being written
            with ops.on(self.stream):
                buf[:numel].view(shape).copy_(t, non_blocking=True)
            return LoadedInput(shape, profile)

    # -- running --------------------------------------------------------------------
    def _prepare(self, context: trt.IExecutionContext, handle: LoadedInput) -> None:
        """Select the profile, set the input shape and bind every tensor's address (if not done already)."""
        key = (handle.shape, handle.profile)
        if self._active == key:
            return
        self._forget_setup()
        profile = self.profiles[handle.profile]
        if context.active_optimization_profile != handle.profile:
            try:
                switched = context.set_optimization_profile_async(handle.profile, self.stream.cuda_stream)
            except RuntimeError as exc:  # the bindings raise instead of returning False
                raise DeployError(
                    f"TensorRT refused to switch to optimization profile #{handle.profile} ({profile}) for input "
                    f"shape {format_shape(handle.shape)}: {exc}"
                ) from None
            if not switched:
                raise DeployError(
                    f"TensorRT refused to switch to optimization profile #{handle.profile} ({profile}) for input "
                    f"shape {format_shape(handle.shape)}"
                )
        if not context.set_input_shape(self.input_name, handle.shape):
            raise DeployError(
                f"TensorRT refused input shape {format_shape(handle.shape)} for profile #{handle.profile} {profile}"
            )
        inp = self._buffer(self.input_name, int(np.prod(handle.shape)))
        self._bind(context, self.input_name, inp)
        for name in self._output_names:
            shape = _dims(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise DeployError(f"TensorRT could not infer the shape of output {name!r}: {list(shape)}")
            self._out_shapes[name] = shape
            self._bind(context, name, self._buffer(name, max(1, int(np.prod(shape)))))
        self._active = key  # after the buffers: growing one resets the state

    @staticmethod
    def _bind(context: trt.IExecutionContext, name: str, buf: torch.Tensor) -> None:
        if not context.set_tensor_address(name, buf.data_ptr()):
            raise DeployError(f"TensorRT refused the device address of tensor {name!r}")

    def run(self, handle: LoadedInput) -> None:
        """Enqueue inference on ``self.stream`` (returns before it finishes)."""
        with self._lock:
            ops, context = self._require()
            self._has_outputs = False
            self._prepare(context, handle)
            if not self.cuda_graph or not self._enqueued_since_setup:
                # without graphs; or the first run since setup, whose enqueue does TensorRT's
                # shape-dependent setup, which must not be captured
                self._enqueue(context, handle.shape)
                self._enqueued_since_setup = True
            else:
                if self._graph is None:
                    self._graph = self._capture(context, handle.shape)
                with ops.on(self.stream):
                    self._graph.replay()
            self._has_outputs = True

    def _enqueue(self, context: trt.IExecutionContext, shape: Shape) -> None:
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise DeployError(f"TensorRT failed to enqueue inference for input {format_shape(shape)}")

    def _capture(self, context: trt.IExecutionContext, shape: Shape) -> torch.cuda.CUDAGraph:
        """A CUDA graph of one enqueue in the context's current state (captured, not run)."""
        ops, _ = self._require()
        self.stream.synchronize()
        graph = ops.new_graph()
        failure = ""
        try:
            with ops.capture(graph, self.stream):
                if not context.execute_async_v3(self.stream.cuda_stream):
                    failure = "TensorRT refused to enqueue during capture"
        except RuntimeError as exc:  # CUDA ended the capture with an error
            failure = failure or str(exc).splitlines()[0]
        if failure:
            raise DeployError(
                f"cannot capture a CUDA graph of this engine for input {format_shape(shape)} ({failure}); "
                "run it without CUDA graphs"
            )
        return graph

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def fetch(self) -> dict[str, np.ndarray]:
        """Copy the last run's outputs to the host (on ``self.stream``) as float32."""
        with self._lock:
            ops, _ = self._require()
            if not self._has_outputs:
                raise DeployError("fetch() before run(): nothing to fetch")
            host: dict[str, torch.Tensor] = {}
            with ops.on(self.stream):
                for name in self._output_names:
                    shape = self._out_shapes[name]
                    numel = int(np.prod(shape))
                    host[name] = ops.to_host(self._buffers[name][:numel].view(shape))
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
