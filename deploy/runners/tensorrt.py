"""TensorRT runner: loads a plan file (+ its sidecar manifest) and runs it on a CUDA stream.

PyTorch provides the CUDA memory and the stream (``self.stream``, a
``torch.cuda.Stream``; its raw handle goes to ``execute_async_v3``), so the
benchmark can record CUDA events around ``load_input`` / ``run`` / ``fetch``.

Contexts: one execution context per optimization profile, made on the profile's first use, whose
profile is selected once when it is made: a size never switches a context's profile (switching is
TensorRT's slow path, and the first run after it pays again). Every context is made with
``ExecutionContextAllocationStrategy.USER_MANAGED`` and given one shared allocation of the engine's
activation memory (the largest profile's): a runner's work is serialized, so contexts never run at once.

Thread safety: TensorRT does not allow a context to be used from two threads at once. Every method
that touches a context or the device buffers (``activate``, ``load_input``, ``run``, ``fetch``,
``deactivate``) holds the runner's lock, and ``infer`` holds it across the whole load-run-fetch
sequence: ``infer`` is the thread-safe way to run a query. The split calls are each safe, but the
buffers hold one query at a time, so a ``load_input`` / ``run`` / ``fetch`` sequence is meant for one
thread (the benchmark). For parallel inference, create one runner per thread (each deserializes the
plan and has its own contexts, memory, buffers and stream; the benchmark's ``--streams N`` opens N).

CUDA graphs (``cuda_graph=True``) under the shape policy (``deploy.shapes.ShapePolicy``). A captured
graph replays exactly the context state, shape and addresses it was captured with, and TensorRT does
setup work in the first enqueue after a shape or profile change, which must not be captured.

- ``dynamic`` (the default): a size (profile, exact input shape) seen ``specialize_after`` times gets an
  execution context of its own (same shared memory), whose shape is set once: that request runs on it as
  a plain enqueue (the setup), then its graph is captured; later requests of the size replay it. At most
  ``max_specialized`` such sizes are kept, least recently used first out (``Specializations``); an evicted
  size goes back to plain enqueues on its profile's context and must earn its graph again. Other sizes run
  as plain enqueues on their profile's context. ``warmup`` sizes are captured at activate.
- ``static``: each profile's context keeps one graph for the state it is in (the single-context rule of
  before, now per profile): the first run of a shape is a plain enqueue, the next one in a row captures,
  later ones replay; another shape on that profile drops it.

The input/output buffers are shared by every context and grow (never shrink) with the largest input
seen. A context remembers the addresses it was bound to; if a buffer moved, it is re-bound before it runs,
which drops its graph; it is set up again by a plain enqueue and recaptured on its next run. A graph is
thus only replayed on the context, shape and addresses it was captured with, never stale. (Per-graph
buffers would avoid the recapture after a growth, but cost an input and outputs per graph and need the
copy target chosen before the run; growth stops once the largest size has been seen.)

Capturing (a few milliseconds: one recorded enqueue and the graph's instantiation) happens in the
request that makes the size's context, after its answer is enqueued, not in a background worker: the
capture needs the stream and the shared memory that requests use.

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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailable, DeployError
from ..modelfile.engine import EngineManifest, read_manifest
from ..modelfile.profiles import Shape, ShapeProfile, format_shape, select_profile
from ..shapes import ShapePolicy, Specializations, as_policy, format_size
from ..trt.version import Messages, check_compatible, cuda_device, import_tensorrt, make_logger
from .base import Runner, check_image_batch
from .trt_cuda import TorchCuda, dims_of, shape4, torch_dtype

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

__all__ = ["TensorRTRunner", "Engine", "LoadedInput", "TorchCuda", "cuda_ops"]


@dataclass(frozen=True)
class LoadedInput:
    """Handle returned by ``load_input``: the shape now in the input buffer and the profile to run it with."""

    shape: Shape
    profile: int


#: Makes the runner's CUDA operations; replaced in tests by a fake that runs on the CPU.
cuda_ops: Callable[[], TorchCuda] = TorchCuda


@dataclass(eq=False)
class _Slot:
    """One execution context and the state it is set up for.

    ``profile`` is selected once, when the context is made, and never changed. ``shape`` /
    ``addresses``: the input shape and the tensor addresses bound now; ``set_up``: a plain enqueue ran
    since they last changed (TensorRT's setup work, which must not be captured); ``graph``: the CUDA
    graph captured for exactly this state, or None.
    """

    context: trt.IExecutionContext
    profile: int
    shape: Shape | None = None
    addresses: tuple[int, ...] = ()
    out_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    set_up: bool = False
    graph: Any = None


#: a specialisation key: (profile index, exact input shape)
_Key = tuple[int, Shape]


class TensorRTRunner(Runner):
    """Runs a TensorRT engine built by ``convmlp-deploy build`` (or any plan, with ``check_compat=False``).

    ``shapes`` (a ``deploy.shapes.ShapePolicy``, a mode name, or None: dynamic with the defaults) says how
    sizes are served; ``cuda_graph=True`` lets the runner replay CUDA graphs (see the module's docstring:
    dynamic: one graph per recurring size, captured after ``specialize_after`` sightings, at most
    ``max_specialized``; static: each profile's context keeps a graph for the shape it ran last).
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
        shapes: ShapePolicy | str | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.cuda_graph = cuda_graph
        self.check_compat = check_compat
        self.allow_host_code = allow_host_code
        self.shapes = as_policy(shapes)
        self.name = f"tensorrt[{self.path.name}]"
        self.manifest: EngineManifest | None = None
        self.profiles: list[ShapeProfile] = []
        self.input_name = "input"
        self._output_names: list[str] = []
        self._lock = threading.RLock()
        self._cuda: TorchCuda | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._memory: torch.Tensor | None = None  # the activation memory every context shares
        self.device_memory_bytes = 0
        self._slots: dict[int, _Slot] = {}  # profile -> its context (made on the profile's first use)
        self._graphs: OrderedDict[_Key, _Slot] = OrderedDict()  # specialised sizes (dynamic + cuda_graph)
        self._specs: Specializations[_Key] = self._new_specs()
        self._profiler: trt.IProfiler | None = None
        self._buffers: dict[str, torch.Tensor] = {}  # flat, grown on demand, shared by every context
        self._dtypes: dict[str, torch.dtype] = {}
        self._out_shapes: dict[str, tuple[int, ...]] = {}  # of the last run, for fetch()
        self._has_outputs = False  # the last run() completed: fetch() has something to copy
        self.contexts_made = 0
        self.graphs_captured = 0
        self.capture_failures: list[str] = []

    def _new_specs(self) -> Specializations[_Key]:
        graphs = self.shapes.dynamic and self.cuda_graph
        return Specializations(self.shapes.specialize_after, self.shapes.max_specialized if graphs else 0)

    # -- metadata ----------------------------------------------------------------
    @property
    def output_names(self) -> list[str]:
        if not self._output_names:
            if self.manifest is not None:
                return list(self.manifest.output_names)
            raise DeployError("TensorRT runner is not active")
        return list(self._output_names)

    def shape_stats(self) -> dict[str, Any]:
        """What the shape policy did so far (the same keys as the OpenVINO runner's where they apply)."""
        with self._lock:
            specialized = [format_size((s[0], s[2], s[3])) for _, s in self._graphs]
            graphs_now = sum(1 for slot in [*self._slots.values(), *self._graphs.values()] if slot.graph is not None)
            dynamic = self.shapes.dynamic
            return {
                "policy": self.shapes.mode,
                "specialize_after": self.shapes.specialize_after if dynamic else None,
                "max_specialized": self._specs.max_specialized,
                "cuda_graph": self.cuda_graph,
                "specializations": len(specialized),
                "specialized": specialized,
                "contexts": len(self._slots) + len(self._graphs),
                "profile_contexts": len(self._slots),
                "contexts_made": self.contexts_made,
                "graphs": graphs_now,
                "captured": self.graphs_captured,
                "evicted": self._specs.evicted,
                "failed": len(self.capture_failures),
                "first_sights": self._specs.first_sights,
                "device_memory_bytes": self.device_memory_bytes,
            }

    # -- lifecycle ---------------------------------------------------------------
    def activate(self) -> None:
        with self._lock:
            self._activate()
            try:
                self._warm_up()
            except BaseException:
                self._release()
                raise

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
            lo, opt, hi = (shape4(dims_of(d)) for d in engine.get_tensor_profile_shape(self.input_name, p))
            profiles.append(ShapeProfile(lo, opt, hi))
        if self.manifest is not None and [str(p) for p in self.manifest.profiles] != [str(p) for p in profiles]:
            raise DeployError(
                f"{self.path}: the sidecar manifest lists profiles {[str(p) for p in self.manifest.profiles]} "
                f"but the engine has {[str(p) for p in profiles]}; the .json belongs to another engine"
            )
        self.profiles = profiles
        self._dtypes = {n: torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        self._runtime, self._engine = runtime, engine
        self._cuda = cuda
        self.stream = cuda.new_stream()
        self._memory, self.device_memory_bytes = self._allocate_device_memory(engine, cuda)
        self._specs = self._new_specs()
        self._has_outputs = False

    def _allocate_device_memory(self, engine: trt.ICudaEngine, cuda: TorchCuda) -> tuple[torch.Tensor, int]:
        """One allocation of the activation memory the largest profile needs, for every context of this runner.

        Sharing it is safe because a runner's work is serialized: every call holds the runner's lock and
        runs on ``self.stream``, so two contexts' enqueues (or graph replays) never overlap. TensorRT
        10.1+ and 11.x: ``device_memory_size_v2`` (the largest over the profiles); 10.0: ``device_memory_size``.
        """
        import torch

        if hasattr(engine, "device_memory_size_v2"):
            size = int(engine.device_memory_size_v2)
        else:  # TensorRT 10.0 (the V1 size is removed in 11.x)
            size = int(engine.device_memory_size)
        # the caching allocator aligns blocks to 512 bytes (TensorRT asks for 256)
        return cuda.empty(max(size, 1), torch.uint8, self.stream), size

    def _host_code_allowed(self) -> bool:
        if self.allow_host_code is not None:
            return self.allow_host_code
        return self.manifest is not None and self.manifest.version_compatible

    def attach_profiler(self, profiler: trt.IProfiler | None) -> None:
        """Report every layer's time of each plain enqueue to ``profiler`` (None: stop), on every context of
        this runner, made now or later. See ``deploy.commands.bench.layer_times``; CUDA-graph replays report
        nothing."""
        with self._lock:
            self._require()
            self._profiler = profiler
            for slot in [*self._slots.values(), *self._graphs.values()]:
                self._set_profiler(slot.context)

    def _set_profiler(self, context: trt.IExecutionContext) -> None:
        if self._profiler is None:
            context.profiler = None  # type: ignore[assignment]  # the bindings take None to detach
        else:
            context.profiler = self._profiler

    def _create_context(self, engine: trt.ICudaEngine, profile: int, shape: Shape) -> trt.IExecutionContext:
        """A context for ``profile`` on the runner's shared device memory; every context is made here.

        The profile is selected here, once: a context never switches profiles (TensorRT's slow path).
        ``shape`` is only for the error messages.
        """
        import tensorrt as trt

        # USER_MANAGED (TensorRT 10.0+, 11.x): the context allocates no activation memory of its own
        # (create_execution_context_without_device_memory is its deprecated 10.0 spelling)
        context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise DeployError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        assert self._memory is not None
        if hasattr(context, "set_device_memory"):  # TensorRT 10.1+ and 11.x
            context.set_device_memory(self._memory.data_ptr(), self.device_memory_bytes)
        else:  # TensorRT 10.0: the write-only ``device_memory`` property (not in the 10.13 stubs)
            setattr(context, "device_memory", self._memory.data_ptr())  # noqa: B010
        if context.active_optimization_profile != profile:  # a new context starts on profile 0
            desc = self.profiles[profile]
            try:
                switched = context.set_optimization_profile_async(profile, self.stream.cuda_stream)
            except RuntimeError as exc:  # the bindings raise instead of returning False
                raise DeployError(
                    f"TensorRT refused to select optimization profile #{profile} ({desc}) for input "
                    f"shape {format_shape(shape)}: {exc}"
                ) from None
            if not switched:
                raise DeployError(
                    f"TensorRT refused to select optimization profile #{profile} ({desc}) for input "
                    f"shape {format_shape(shape)}"
                )
        if self._profiler is not None:
            self._set_profiler(context)
        self.contexts_made += 1
        return context

    def _warm_up(self) -> None:
        """Capture the graphs of the policy's ``warmup`` sizes before the runner is ready (dynamic + cuda_graph)."""
        if not (self.shapes.dynamic and self.cuda_graph and self._specs.max_specialized):
            return
        ops, _ = self._require()
        channels = self.profiles[0].min[1]
        # largest first: the shared buffers reach their size before any graph is captured on them
        for b, h, w in sorted(self.shapes.warmup, key=lambda s: -s[0] * s[1] * s[2]):
            shape = (b, channels, h, w)
            key = (select_profile(self.profiles, shape), shape)
            if self._specs.warm(key):
                inp = self._buffer(self.input_name, int(np.prod(shape)))
                with ops.on(self.stream):
                    inp[: int(np.prod(shape))].zero_()  # the setup enqueue runs on defined data
                self._specialize(key)
                self._has_outputs = False
        self.stream.synchronize()

    def _release_graph(self, slot: _Slot) -> None:
        if slot.graph is not None:
            assert self._cuda is not None
            self._cuda.release(slot.graph)
            slot.graph = None

    def _release(self) -> None:
        """Graphs first, then the contexts, then the memory they point at."""
        for slot in [*self._slots.values(), *self._graphs.values()]:
            self._release_graph(slot)
        self._slots.clear()
        self._graphs.clear()
        self._has_outputs = False
        self._buffers.clear()
        self._memory = None
        self._engine = None
        self._runtime = None

    def deactivate(self) -> None:
        with self._lock:
            self._release()

    # -- inputs --------------------------------------------------------------------
    def check_input(self, x: Any) -> None:
        check_image_batch(x)
        select_profile(self.profiles, tuple(int(d) for d in x.shape))

    def _require(self) -> tuple[TorchCuda, trt.ICudaEngine]:
        if self._cuda is None or self._engine is None:
            raise DeployError("TensorRT runner is not active (use it in a 'with' block)")
        return self._cuda, self._engine

    def _buffer(self, name: str, numel: int) -> torch.Tensor:
        """The flat device buffer of ``name``, grown (never shrunk) to hold ``numel`` elements.

        Growing moves it: each context notices at its next run (its bound addresses differ) and re-binds,
        which drops its graph (recaptured later); nothing replays with the old address.
        """
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = self._require()[0].empty(numel, self._dtypes[name], self.stream)
            self._buffers[name] = buf
        return buf

    def load_input(self, x: Any) -> LoadedInput:
        """Copy ``x`` (numpy or torch, CPU or CUDA) into the engine's input buffer on ``self.stream``."""
        import torch

        with self._lock:
            ops, _ = self._require()
            shape = shape4(x.shape)
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
    def _profile_slot(self, profile: int, shape: Shape) -> _Slot:
        slot = self._slots.get(profile)
        if slot is None:
            _, engine = self._require()
            slot = self._slots[profile] = _Slot(self._create_context(engine, profile, shape), profile)
        return slot

    def _prepare(self, slot: _Slot, shape: Shape) -> None:
        """Set ``slot``'s input shape and bind every tensor's address, where they changed; a change drops
        its graph and means the next enqueue does TensorRT's setup."""
        context = slot.context
        if slot.shape != shape:
            self._release_graph(slot)
            slot.set_up = False
            slot.shape = None
            if not context.set_input_shape(self.input_name, shape):
                raise DeployError(
                    f"TensorRT refused input shape {format_shape(shape)} for profile #{slot.profile} "
                    f"{self.profiles[slot.profile]}"
                )
            slot.shape = shape
            slot.addresses = ()
            slot.out_shapes = {}
            for name in self._output_names:
                out = dims_of(context.get_tensor_shape(name))
                if any(d < 0 for d in out):
                    raise DeployError(f"TensorRT could not infer the shape of output {name!r}: {list(out)}")
                slot.out_shapes[name] = out
        bufs = [self._buffer(self.input_name, int(np.prod(shape)))]
        bufs += [self._buffer(n, max(1, int(np.prod(slot.out_shapes[n])))) for n in self._output_names]
        addresses = tuple(b.data_ptr() for b in bufs)
        if addresses != slot.addresses:
            self._release_graph(slot)
            slot.set_up = False
            slot.addresses = ()
            for name, buf in zip([self.input_name, *self._output_names], bufs, strict=True):
                if not context.set_tensor_address(name, buf.data_ptr()):
                    raise DeployError(f"TensorRT refused the device address of tensor {name!r}")
            slot.addresses = addresses

    def run(self, handle: LoadedInput) -> None:
        """Enqueue inference on ``self.stream`` (returns before it finishes)."""
        with self._lock:
            self._require()
            self._has_outputs = False
            key = (handle.profile, handle.shape)
            fixed = self._graphs.get(key)
            if fixed is not None:  # a specialised size: its own context, set up once, its graph
                self._specs.use(key)
                self._graphs.move_to_end(key)
                self._run_fixed(fixed)
            elif self._specs.sight(key):  # the K-th sighting: this request sets up the new context
                self._specialize(key)
            else:
                slot = self._profile_slot(handle.profile, handle.shape)
                self._prepare(slot, handle.shape)
                if self.cuda_graph and not self.shapes.dynamic and slot.set_up:
                    # static: the profile's context keeps a graph for its current state (captured on the
                    # second run of a shape in a row, dropped when the shape or an address changes)
                    if slot.graph is None:
                        slot.graph = self._capture(slot)
                    self._replay(slot)
                else:
                    self._enqueue(slot)
                self._out_shapes = slot.out_shapes
            self._has_outputs = True

    def _run_fixed(self, slot: _Slot) -> None:
        assert slot.shape is not None
        self._prepare(slot, slot.shape)  # re-binds (and drops the graph) only if a buffer moved
        if not slot.set_up:
            self._enqueue(slot)
        else:
            if slot.graph is None:
                slot.graph = self._capture(slot)
            self._replay(slot)
        self._out_shapes = slot.out_shapes

    def _specialize(self, key: _Key) -> None:
        """A context of its own for ``key``: set up by a plain enqueue (which answers the request that made
        it), then its graph is captured; the least recently used specialisations beyond the bound go.

        A capture that fails leaves the size on its profile's context for good (recorded in ``shape_stats``).
        """
        _, engine = self._require()
        profile, shape = key
        try:
            slot = _Slot(self._create_context(engine, profile, shape), profile)
            self._prepare(slot, shape)
            self._enqueue(slot)  # TensorRT's setup for this state, and the request's answer
        except BaseException:
            self._specs.failed(key)  # not retried; the error is the request's
            raise
        self._out_shapes = slot.out_shapes
        try:
            slot.graph = self._capture(slot)
        except DeployError as exc:
            self._specs.failed(key)
            self.capture_failures.append(str(exc))
            return
        self._graphs[key] = slot
        for old in self._specs.ready(key):
            gone = self._graphs.pop(old, None)
            if gone is not None:
                self._release_graph(gone)  # the graph before its context (dropped with the slot)

    def _enqueue(self, slot: _Slot) -> None:
        if not slot.context.execute_async_v3(self.stream.cuda_stream):
            raise DeployError(f"TensorRT failed to enqueue inference for input {format_shape(slot.shape or ())}")
        slot.set_up = True

    def _replay(self, slot: _Slot) -> None:
        ops, _ = self._require()
        with ops.on(self.stream):
            slot.graph.replay()

    def _capture(self, slot: _Slot) -> torch.cuda.CUDAGraph:
        """A CUDA graph of one enqueue of ``slot``'s context in its current state (captured, not run)."""
        ops, _ = self._require()
        shape = slot.shape or ()
        self.stream.synchronize()
        graph = ops.new_graph()
        failure = ""
        try:
            with ops.capture(graph, self.stream):
                if not slot.context.execute_async_v3(self.stream.cuda_stream):
                    failure = "TensorRT refused to enqueue during capture"
        except RuntimeError as exc:  # CUDA ended the capture with an error
            failure = failure or str(exc).splitlines()[0]
        if failure:
            ops.release(graph)
            raise DeployError(
                f"cannot capture a CUDA graph of this engine for input {format_shape(shape)} ({failure}); "
                "run it without CUDA graphs"
            )
        self.graphs_captured += 1
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
