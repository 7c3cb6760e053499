"""OpenVINO runner: our ONNX graphs on Intel/AMD CPUs, in FP32, BF16 or FP16, and Q/DQ graphs as INT8.

OpenVINO reads the ONNX graphs ``export`` writes directly, and the IRs
(``.xml`` + ``.bin``) that ``export --openvino`` writes. Precision is a
compile-time hint (``INFERENCE_PRECISION_HINT``): ``fp32``, ``bf16``, ``fp16`` or
``auto`` (OpenVINO's own default: BF16 where the CPU has native BF16 — AMX or
AVX512_BF16 — else FP32). The precision OpenVINO actually compiled with is read
back from the compiled model and reported (``precision_used``); an explicit
``bf16``/``fp16`` on a CPU without it is refused instead of falling back. A Q/DQ
graph runs its quantized layers in INT8 and the rest in that precision.

Shapes (``deploy.shapes.ShapePolicy``): the graphs are dynamic in batch, height and width.

- ``dynamic`` (the default): one dynamic-shape compiled model answers every size at once. A size seen
  ``specialize_after`` times gets a static-shape compile (7-20% faster per call here, ~0.3 s to make),
  made by one background worker thread, outside the lock requests take; requests switch to it when it
  is ready and never wait on a compile. At most ``max_specialized`` are kept, least recently used out.
  ``warmup`` sizes are compiled in ``activate()``, before it returns.
- ``static``: one static-shape model per input size, compiled on first sight on the request path
  (under the lock), the ``max_compiled`` most recent kept; ``max_compiled=0`` uses the dynamic model.

OpenVINO's model cache (``CACHE_DIR``) makes a second run load instead of compile. Its key ignores the
inference precision hint (an FP16 compile was handed to a later f32 run, with FP16's numbers under an
fp32 label), so each precision gets a cache folder of its own (``model_cache_dir``). The cache is
bounded in bytes (``ShapePolicy.cache_bytes``; 0: no cache): after each compile the least recently used
files of this tool's ``precision-*`` folders go first, and nothing else is touched. A cache that cannot
be written (a full disk) costs compile time, never an answer: one warning, and the runner goes on
without it. An unusable cache entry (corrupt, or from another OpenVINO) is replaced, and named once.

Threads and streams map onto ``INFERENCE_NUM_THREADS`` and ``NUM_STREAMS``
(with ``PERFORMANCE_HINT`` LATENCY for one stream, THROUGHPUT for several).
``infer`` is thread-safe: every call takes one infer request of the compiled
model, so up to ``streams`` threads run at once; the compile cache is guarded by
one lock; compiles of the dynamic policy run outside it.
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, DeployError, OptionError, one_line
from ..modelfile.ir import is_ir, read_ir
from ..precision import canonical
from ..shapes import ShapePolicy, Specializations, as_policy, format_size
from .base import Runner
from .openvino_cache import (
    LOW_SPACE,
    CacheWarning,
    cache_files,
    default_cache_dir,
    is_blob,
    prune_cache,
    snapshot,
)

__all__ = ["OpenVINORunner", "PRECISIONS", "CacheWarning", "cache_files", "cpu_capabilities", "default_cache_dir",
           "import_openvino", "prune_cache"]

#: ``--precision`` names (``deploy.precision``) -> OpenVINO's ``INFERENCE_PRECISION_HINT`` (None: its default)
PRECISIONS: dict[str, str | None] = {"auto": None, "fp32": "f32", "bf16": "bf16", "fp16": "f16"}
#: OpenVINO element type names -> our names
_REPORTED = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}
#: the capability OPTIMIZATION_CAPABILITIES must list for an explicit precision
_NEEDS = {"bf16": "BF16", "f16": "FP16"}
def import_openvino() -> Any:
    """The ``openvino`` module, or ``BackendUnavailable`` naming the extra to install."""
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("OpenVINO is not installed: pip install 'convmlp-deploy[openvino]'") from None
    return openvino


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin can run here (``FP32``, ``BF16``, ``FP16``, ``INT8``...); [] without OpenVINO."""
    try:
        ov = import_openvino()
    except BackendUnavailable:
        return []
    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def first_line(exc: BaseException) -> str:
    """OpenVINO's own message on one line, without its ``Exception from src/...`` and ``Check ...`` framing."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return one_line(" ".join(useful or lines or [type(exc).__name__]), limit=300)


class OpenVINORunner(Runner):
    """Runs an ONNX file (or an OpenVINO IR ``.xml``) with OpenVINO on the CPU.

    ``precision``: ``auto`` (OpenVINO's default), ``fp32`` (``f32``), ``bf16`` or ``fp16``.
    ``threads``/``streams``: ``INFERENCE_NUM_THREADS``/``NUM_STREAMS`` (None: OpenVINO decides).
    ``shapes``: the ``deploy.shapes.ShapePolicy`` (or its mode name; None: dynamic, the defaults).
    ``cache_dir``: the root of OpenVINO's compiled-model cache (None: the policy's, else
    ``default_cache_dir()``; ``""``: off, as is ``cache_bytes=0``). ``max_compiled``: the static-shape
    models kept (None: the policy's ``max_specialized``).
    """

    device = "cpu"
    concurrent = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        precision: str = "auto",
        threads: int | None = None,
        streams: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        max_compiled: int | None = None,
        perf_count: bool = False,
        shapes: ShapePolicy | str | None = None,
    ) -> None:
        super().__init__()
        precision = canonical(precision) or "auto"
        if precision not in PRECISIONS:
            raise OptionError(f"OpenVINO runs --precision {', '.join(PRECISIONS)}, not {precision}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if streams is not None and streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        if max_compiled is not None and max_compiled < 0:
            raise ValueError(f"max_compiled must be >= 0, got {max_compiled}")
        self.path = Path(path)
        self.precision = precision
        self.threads = threads
        self.streams = streams
        self.shapes = as_policy(shapes)
        root = cache_dir if cache_dir is not None else self.shapes.cache_dir
        self.cache_dir = None if (root is not None and not str(root)) or self.shapes.cache_bytes == 0 else (
            default_cache_dir() if root is None else Path(root))
        self.cache_bytes = self.shapes.cache_bytes
        self.max_compiled = self.shapes.max_specialized if max_compiled is None else max_compiled
        #: ``PERF_COUNT``: each run keeps OpenVINO's per-node times (``last_profile``); costs a little time
        self.perf_count = perf_count
        self.precision_used: str | None = None  # what OpenVINO compiled with, after activate()
        self.name = f"openvino[CPU,{precision}]"
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()  # the cache folder's housekeeping, one compile at a time
        self._count_lock = threading.Lock()  # counters and notes (taken inside the others, never around them)
        self._closing = False
        self._blob_hint = 0  # the largest blob seen in the cache: room kept for the next compile
        self._core: Any = None
        self._model: Any = None
        self._input_name = "input"
        self._output_names: list[str] = []
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._dynamic: Any = None
        self._requests: dict[int, list[Any]] = {}  # id(compiled model) -> idle infer requests
        self._local = threading.local()
        self._worker: threading.Thread | None = None
        self._queue: queue.SimpleQueue[tuple[int, ...] | None] = queue.SimpleQueue()
        self._spec: Specializations[Any] = self._new_specializations()
        self.compiles = 0  # how many times a model was compiled (or loaded from CACHE_DIR)
        self.static_made = 0  # static-shape models made (both policies)
        self.static_evicted = 0  # ... and dropped to keep the bound (static policy; dynamic: ``_spec``)
        self.failed: list[str] = []  # specialisations that could not be made (they stay on the dynamic model)
        #: what the cache said once each: a full disk, unusable entries replaced
        self.cache_warnings: list[str] = []
        self._warned: set[str] = set()

    def _new_specializations(self) -> Specializations[Any]:
        # the static policy keeps its own bound (max_compiled); its bookkeeping only counts first sights
        if self.shapes.dynamic:
            return Specializations(self.shapes.specialize_after, self.max_compiled)
        return Specializations(self.shapes.specialize_after, 0)

    # -- metadata ----------------------------------------------------------------
    @property
    def output_names(self) -> list[str]:
        if not self._output_names:
            raise DeployError("OpenVINO runner is not active")
        return list(self._output_names)

    @property
    def model_cache_dir(self) -> Path | None:
        """Where OpenVINO caches this runner's compiled models: one folder per precision hint, since
        OpenVINO's cache key leaves the hint out (None: no cache)."""
        return self.cache_dir / f"precision-{self.precision}" if self.cache_dir is not None else None

    def check_precision(self) -> None:
        """``BackendUnavailable`` without OpenVINO; ``OptionError`` for a precision this CPU lacks."""
        hint = PRECISIONS[self.precision]
        import_openvino()
        caps = cpu_capabilities()
        if hint in _NEEDS and _NEEDS[hint] not in caps:
            raise OptionError(
                f"--precision {self.precision}: this CPU has no native {_NEEDS[hint]} for OpenVINO "
                f"(it offers {', '.join(caps) or 'nothing'}); use fp32 or auto"
            )

    def cache_size(self) -> int:
        """Bytes in this runner's cache root now (every precision's folder; 0 with no cache)."""
        if self.cache_dir is None:
            return 0
        return sum(st.st_size for _, st in cache_files(self.cache_dir))

    def shape_stats(self) -> dict[str, Any]:
        """What the shape policy did so far (for the benchmark and ``deploy.load(...).info()``)."""
        with self._lock:
            specialized = [format_size((s[0], s[2], s[3])) for s in self._compiled]
        dynamic = self.shapes.dynamic
        return {
            "policy": self.shapes.mode,
            "specialize_after": self.shapes.specialize_after if dynamic else None,
            "max_specialized": self.max_compiled,
            "specializations": len(specialized),
            "specialized": specialized,
            "compiles": self.compiles,
            "made": self.static_made,
            "evicted": self._spec.evicted if dynamic else self.static_evicted,
            "pending": self._spec.pending() if dynamic else 0,
            "failed": len(self.failed),
            "first_sights": self._spec.first_sights,
            "cache_bytes": self.cache_size(),
            "cache_limit": self.cache_bytes if self.cache_dir is not None else 0,
            "cache_dir": str(self.cache_dir) if self.cache_dir is not None else None,
            "cache_warnings": list(self.cache_warnings),
        }

    # -- lifecycle ---------------------------------------------------------------
    def activate(self) -> None:
        ov = import_openvino()
        self.check_precision()
        if is_ir(self.path):
            read_ir(self.path)  # DeployError for a missing .bin or a file that is not IR
        elif not self.path.is_file():
            raise DeployError(f"ONNX file not found: {self.path}")
        else:
            _check_onnx(self.path)
        core = ov.Core()
        cache = self.model_cache_dir
        if cache is not None:
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # an unwritable cache costs compile time, nothing else
                self._cache_failed(f"cannot make {cache} ({exc.strerror or exc})")
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report
            raise DeployError(f"{self.path}: OpenVINO cannot read it ({first_line(exc)})") from None
        if len(model.inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, found {len(model.inputs)}")
        self._core, self._model = core, model
        self._input_name = model.inputs[0].get_any_name()
        self._output_names = [o.get_any_name() for o in model.outputs]
        self._compiled.clear()
        self._requests.clear()
        self._dynamic = None
        self._spec = self._new_specializations()
        self._closing = False
        # compile once now so that a bad graph or precision fails here, and precision_used is known
        self._dynamic = self._compile(None)
        for b, h, w in self.shapes.warmup:  # declared sizes are ready before activate returns
            shape = (b, 3, h, w)
            if self.shapes.dynamic:
                if self._spec.warm(shape):
                    self._install(shape, self._compile(shape))
            elif self.max_compiled:
                self._compiled_for(shape)
        if self.shapes.dynamic and self.max_compiled:
            self._queue = queue.SimpleQueue()
            self._worker = threading.Thread(target=self._work, name="openvino-specialize", daemon=True)
            self._worker.start()

    def deactivate(self) -> None:
        worker, self._worker = self._worker, None
        self._closing = True  # what is queued is dropped; a compile under way is waited for
        if worker is not None:
            self._queue.put(None)
            worker.join()
        with self._lock:
            self._compiled.clear()
            self._requests.clear()
            self._dynamic = None
            self._model = None
            self._core = None

    # -- compiling ---------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if (self.streams or 1) > 1 else "LATENCY"}
        hint = PRECISIONS[self.precision]
        if hint is not None:
            cfg["INFERENCE_PRECISION_HINT"] = hint
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = self.threads
        if self.streams is not None:
            cfg["NUM_STREAMS"] = self.streams
        if self.perf_count:
            cfg["PERF_COUNT"] = True
        return cfg

    def _compile_model(self, model: Any, config: dict[str, Any]) -> Any:
        """OpenVINO's ``compile_model`` (one place, so that a test can slow it down or make it fail)."""
        return self._core.compile_model(model, "CPU", config)

    def _compile(self, shape: tuple[int, ...] | None) -> Any:
        """Compile for ``shape`` (None: dynamic shapes) through the bounded disk cache."""
        model = self._model
        if shape is not None:
            model = model.clone()
            model.reshape({self._input_name: list(shape)})
        where = "x".join(map(str, shape)) if shape else "dynamic shapes"
        compiled = self._compile_cached(model, where)
        with self._count_lock:
            self.compiles += 1
        used = _element_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        hint = PRECISIONS[self.precision]
        if hint is not None and used != _REPORTED.get(hint):
            raise DeployError(f"OpenVINO compiled {self.path.name} in {used}, not the {self.precision} asked for")
        self.precision_used = used
        self.name = f"openvino[CPU,{used}]"
        return compiled

    def _compile_cached(self, model: Any, where: str) -> Any:
        root, folder = self.cache_dir, self.model_cache_dir
        if root is None or folder is None:
            return self._compile_plain(model, where)
        cfg = {**self._config(), "CACHE_DIR": str(folder)}
        before = self._make_room(root, folder)
        try:
            compiled = self._compile_model(model, cfg)
        except Exception as exc:
            compiled = self._cache_retry(model, where, folder, exc)
            if compiled is None:
                return self._compile_plain(model, where)
        self._after_compile(root, folder, before)
        return compiled

    def _compile_plain(self, model: Any, where: str) -> Any:
        try:
            return self._compile_model(model, self._config())
        except Exception as exc:
            raise DeployError(f"{self.path}: OpenVINO cannot compile it for {where} ({first_line(exc)})") from None

    def _cache_retry(self, model: Any, where: str, folder: Path, exc: Exception) -> Any:
        """A compile through the cache raised: drop unusable entries and try the cache once more; None
        when the cache is what fails (it is turned off, with one warning) or not the cause."""
        bad = [p for p in folder.iterdir() if p.is_file() and not is_blob(p)] if folder.is_dir() else []
        if bad:
            for p in bad:
                p.unlink(missing_ok=True)
            self._note("corrupt:" + ",".join(sorted(p.name for p in bad)),
                       f"OpenVINO cache entries were unusable and are replaced: {', '.join(p.name for p in bad)} "
                       f"in {folder}")
            try:
                return self._compile_model(model, {**self._config(), "CACHE_DIR": str(folder)})
            except Exception:
                pass
        try:
            compiled = self._compile_model(model, self._config())
        except Exception:
            raise DeployError(f"{self.path}: OpenVINO cannot compile it for {where} ({first_line(exc)})") from None
        self._cache_failed(first_line(exc))  # without the cache it compiles: the cache is the problem
        return compiled

    def _make_room(self, root: Path, folder: Path) -> dict[str, tuple[int, int, int]]:
        """Before a compile: prune so that the blob it may write (as large as the largest seen) still fits
        the bound, and return the folder's snapshot."""
        with self._cache_lock:
            try:
                before = snapshot(folder)
                self._blob_hint = max([self._blob_hint, *(sig[2] for sig in before.values())])
                if self._blob_hint:
                    prune_cache(root, max(0, self.cache_bytes - self._blob_hint))
                    before = snapshot(folder)
                return before
            except OSError as exc:
                self._cache_failed(f"{exc.strerror or exc}")
                return {}

    def _after_compile(self, root: Path, folder: Path, before: dict[str, tuple[int, int, int]]) -> None:
        """Name entries OpenVINO replaced (unusable), bound the cache, and say once when the disk is full."""
        with self._cache_lock:
            try:
                after = snapshot(folder)
                self._blob_hint = max([self._blob_hint, *(sig[2] for sig in after.values())])
                replaced = [n for n, sig in before.items() if n in after and after[n] != sig]
                if replaced:
                    self._note("corrupt:" + ",".join(sorted(replaced)), f"OpenVINO cache entries were unusable (corrupt, or from another "
                                          f"OpenVINO) and are replaced: {', '.join(sorted(replaced))} in {folder}")
                if not set(after) - set(before) and not replaced and shutil.disk_usage(folder).free < LOW_SPACE:
                    self._note("full", f"OpenVINO's model cache in {folder} is not written: its disk is full; "
                                       "compiling without it (answers are unaffected)")
                prune_cache(root, self.cache_bytes)
            except OSError as exc:
                self._cache_failed(f"{exc.strerror or exc}")

    def _cache_failed(self, why: str) -> None:
        """The cache cannot be used: turn it off for this runner, say so once."""
        full = "No space" in why or "ENOSPC" in why or str(errno.ENOSPC) in why
        self._note("full" if full else "off", f"OpenVINO's model cache in {self.model_cache_dir} cannot be "
                                              f"written ({why}): compiling without it (answers are unaffected)")
        self.cache_dir = None

    def _note(self, kind: str, message: str) -> None:
        """Warn once per ``kind`` (a full disk, the cache off; each unusable entry by its name)."""
        with self._count_lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
            self.cache_warnings.append(message)
        warnings.warn(message, CacheWarning, stacklevel=2)

    def _install(self, shape: tuple[int, ...], compiled: Any) -> None:
        """A specialisation is made (dynamic policy): use it from now on, evict what the bound says."""
        with self._lock:
            if self._model is None:
                return  # deactivated meanwhile
            self._compiled[shape] = compiled
            self.static_made += 1
            for old in self._spec.ready(shape):
                gone = self._compiled.pop(old, None)
                if gone is not None:
                    self._requests.pop(id(gone), None)

    def _work(self) -> None:
        """The one background worker of the dynamic policy: compiles sizes that earned it, in turn."""
        while True:
            shape = self._queue.get()
            if shape is None or self._closing:
                return
            try:
                compiled = self._compile(shape)
            except Exception as exc:  # the size stays on the dynamic model
                self._spec.failed(shape)
                with self._count_lock:
                    self.failed.append(f"{'x'.join(map(str, shape))}: {one_line(exc)}")
                continue
            self._install(shape, compiled)

    def _compiled_for(self, shape: tuple[int, ...] | None) -> Any:
        """The compiled model for ``shape``: its own when there is one (static: made now, on the request
        path), else the dynamic one (dynamic: a size that earned its own is queued for the worker)."""
        if self.shapes.dynamic and shape is not None:
            ask = self._spec.sight(shape)
            with self._lock:
                if self._model is None:
                    raise DeployError("OpenVINO runner is not active (use it in a 'with' block)")
                compiled = self._compiled.get(shape)
                if compiled is not None:
                    self._compiled.move_to_end(shape)
                    return compiled
                if ask and self._worker is not None:
                    self._queue.put(shape)
                return self._dynamic
        with self._lock:
            if self._model is None:
                raise DeployError("OpenVINO runner is not active (use it in a 'with' block)")
            if shape is None or self.max_compiled == 0:
                if self._dynamic is None:
                    self._dynamic = self._compile(None)
                return self._dynamic
            compiled = self._compiled.get(shape)
            if compiled is None:
                self._spec.sight(shape)  # counts a first sight
                compiled = self._compile(shape)
                self._compiled[shape] = compiled
                self.static_made += 1
                while len(self._compiled) > self.max_compiled:
                    _, old = self._compiled.popitem(last=False)
                    self._requests.pop(id(old), None)
                    self.static_evicted += 1
            self._compiled.move_to_end(shape)
            return compiled

    def _take_request(self, compiled: Any) -> Any:
        with self._lock:
            idle = self._requests.setdefault(id(compiled), [])
            return idle.pop() if idle else compiled.create_infer_request()

    def _give_back(self, compiled: Any, request: Any) -> None:
        with self._lock:
            if any(c is compiled for c in self._compiled.values()) or compiled is self._dynamic:
                self._requests.setdefault(id(compiled), []).append(request)

    # -- the split inference call ------------------------------------------------
    def load_input(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, handle: np.ndarray) -> None:
        compiled = self._compiled_for(tuple(int(d) for d in handle.shape))
        request = self._take_request(compiled)
        try:
            request.infer({0: handle})
            outs = [np.array(request.get_output_tensor(i).data, dtype=np.float32, copy=True)
                    for i in range(len(self._output_names))]
            if self.perf_count:
                self._local.profile = [
                    (p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1e3)
                    for p in request.profiling_info if p.status == p.Status.EXECUTED
                ]
        except Exception as exc:
            raise DeployError(f"OpenVINO failed on input {list(handle.shape)}: {first_line(exc)}") from None
        finally:
            self._give_back(compiled, request)
        self._local.outputs = outs

    def last_profile(self) -> list[tuple[str, str, str, float]]:
        """The last run's executed nodes (this thread's) as OpenVINO reports them with ``PERF_COUNT``:
        (node name, node type, exec type such as ``brgconv_avx512_amx_I8``, real time in ms)."""
        if not self.perf_count:
            raise DeployError("per-node times need an OpenVINO runner made with perf_count=True")
        profile = getattr(self._local, "profile", None)
        if profile is None:
            raise DeployError("last_profile() before run(): nothing was profiled")
        return list(profile)

    def fetch(self) -> dict[str, np.ndarray]:
        outs = getattr(self._local, "outputs", None)
        if outs is None:
            raise DeployError("fetch() before run(): nothing to fetch")
        return dict(zip(self._output_names, outs, strict=True))


def _element_name(value: Any) -> str:
    """``ov.Type.bf16`` (or its name) -> ``bf16``; ``f32`` -> ``fp32``."""
    text = str(value.get_type_name() if hasattr(value, "get_type_name") else value).lower()
    return _REPORTED.get(text, text)


def _check_onnx(path: Path) -> None:
    """Refuse a file that is not ONNX before OpenVINO tries every frontend it has on it."""
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DeployError(f"{path}: not an ONNX model ({first})") from None
