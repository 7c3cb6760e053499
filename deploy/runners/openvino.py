"""OpenVINO runner: our ONNX graphs on Intel/AMD CPUs, in FP32, BF16 or FP16, and Q/DQ graphs as INT8.

OpenVINO reads the ONNX graphs ``export`` writes directly, and the IRs
(``.xml`` + ``.bin``) that ``export --openvino`` writes. Precision is a
compile-time hint (``INFERENCE_PRECISION_HINT``): ``fp32``, ``bf16``, ``fp16`` or
``auto`` (OpenVINO's own default: BF16 where the CPU has native BF16 — AMX or
AVX512_BF16 — else FP32). The precision OpenVINO actually compiled with is read
back from the compiled model and reported (``precision_used``); an explicit
``bf16``/``fp16`` on a CPU without it is refused instead of falling back. A Q/DQ
graph runs its quantized layers in INT8 and the rest in that precision.

Shapes: the graphs are dynamic in batch, height and width. A model compiled for
one static shape runs ~10% faster here than the dynamic one, and compiling takes
~0.2 s, so the runner compiles once per input shape and keeps the most recent
``max_compiled`` of them (the way the TensorRT runner keeps one profile per
shape range). ``max_compiled=0`` uses a single dynamic-shape compiled model.
OpenVINO's model cache (``CACHE_DIR``) makes a second run load instead of
compile. Its key ignores the inference precision hint (an FP16 compile was handed to a later f32 run,
with FP16's numbers under an fp32 label), so each precision gets a cache folder of its own
(``model_cache_dir``).

Threads and streams map onto ``INFERENCE_NUM_THREADS`` and ``NUM_STREAMS``
(with ``PERFORMANCE_HINT`` LATENCY for one stream, THROUGHPUT for several).
``infer`` is thread-safe: every call takes one infer request of the compiled
model, so up to ``streams`` threads run at once; the compile cache is guarded by
one lock.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, DeployError, OptionError, one_line
from ..modelfile.ir import is_ir, read_ir
from ..precision import canonical
from .base import Runner

__all__ = ["OpenVINORunner", "PRECISIONS", "cpu_capabilities", "default_cache_dir", "import_openvino"]

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


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/convmlp-deploy/openvino`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convmlp-deploy" / "openvino"


def first_line(exc: BaseException) -> str:
    """OpenVINO's own message on one line, without its ``Exception from src/...`` and ``Check ...`` framing."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return one_line(" ".join(useful or lines or [type(exc).__name__]), limit=300)


class OpenVINORunner(Runner):
    """Runs an ONNX file (or an OpenVINO IR ``.xml``) with OpenVINO on the CPU.

    ``precision``: ``auto`` (OpenVINO's default), ``fp32`` (``f32``), ``bf16`` or ``fp16``.
    ``threads``/``streams``: ``INFERENCE_NUM_THREADS``/``NUM_STREAMS`` (None: OpenVINO decides).
    ``cache_dir``: OpenVINO's compiled-model cache (None: ``default_cache_dir()``; ``""``: off).
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
        max_compiled: int = 8,
        perf_count: bool = False,
    ) -> None:
        super().__init__()
        precision = canonical(precision) or "auto"
        if precision not in PRECISIONS:
            raise OptionError(f"OpenVINO runs --precision {', '.join(PRECISIONS)}, not {precision}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if streams is not None and streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        if max_compiled < 0:
            raise ValueError(f"max_compiled must be >= 0, got {max_compiled}")
        self.path = Path(path)
        self.precision = precision
        self.threads = threads
        self.streams = streams
        self.cache_dir = default_cache_dir() if cache_dir is None else (Path(cache_dir) if cache_dir else None)
        self.max_compiled = max_compiled
        #: ``PERF_COUNT``: each run keeps OpenVINO's per-node times (``last_profile``); costs a little time
        self.perf_count = perf_count
        self.precision_used: str | None = None  # what OpenVINO compiled with, after activate()
        self.name = f"openvino[CPU,{precision}]"
        self._lock = threading.Lock()
        self._core: Any = None
        self._model: Any = None
        self._input_name = "input"
        self._output_names: list[str] = []
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._dynamic: Any = None
        self._requests: dict[int, list[Any]] = {}  # id(compiled model) -> idle infer requests
        self._local = threading.local()
        self.compiles = 0  # how many times a model was compiled (or loaded from CACHE_DIR)

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
                core.set_property({"CACHE_DIR": str(cache)})
            except OSError:
                self.cache_dir = None  # an unwritable cache costs compile time, nothing else
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
        # compile once now so that a bad graph or precision fails here, and precision_used is known
        self._compiled_for(None)

    def deactivate(self) -> None:
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

    def _compile(self, shape: tuple[int, ...] | None) -> Any:
        model = self._model
        if shape is not None:
            model = model.clone()
            model.reshape({self._input_name: list(shape)})
        try:
            compiled = self._core.compile_model(model, "CPU", self._config())
        except Exception as exc:
            where = "x".join(map(str, shape)) if shape else "dynamic shapes"
            raise DeployError(f"{self.path}: OpenVINO cannot compile it for {where} ({first_line(exc)})") from None
        self.compiles += 1
        used = _element_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        hint = PRECISIONS[self.precision]
        if hint is not None and used != _REPORTED.get(hint):
            raise DeployError(f"OpenVINO compiled {self.path.name} in {used}, not the {self.precision} asked for")
        self.precision_used = used
        self.name = f"openvino[CPU,{used}]"
        return compiled

    def _compiled_for(self, shape: tuple[int, ...] | None) -> Any:
        """The compiled model for ``shape`` (the dynamic one when ``shape`` is None or caching is off)."""
        with self._lock:
            if self._model is None:
                raise DeployError("OpenVINO runner is not active (use it in a 'with' block)")
            if shape is None or self.max_compiled == 0:
                if self._dynamic is None:
                    self._dynamic = self._compile(None)
                return self._dynamic
            compiled = self._compiled.get(shape)
            if compiled is None:
                compiled = self._compile(shape)
                self._compiled[shape] = compiled
                while len(self._compiled) > self.max_compiled:
                    _, old = self._compiled.popitem(last=False)
                    self._requests.pop(id(old), None)
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
