"""The one table that maps ``--backend`` names to runners, and each backend's rules.

Every command that runs a model opens it through ``deploy.loader`` (``plan_model`` then
``open_model``), which asks the row here: what it reads (a PyTorch variant, an ONNX graph or a
TensorRT engine), where it runs, which run-time precisions it offers, which options it takes, what
this machine must have, and how to open it. Each rule is checked and worded once, in a ``Backend``
method; a new runtime is one runner module plus one row here, and no command learns backend names
one by one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, OptionError, words
from .modelfile import is_ir
from .precision import AUTO, canonical
from .runners.base import Runner
from .shapes import ShapePolicy, as_policy

__all__ = [
    "RunnerOptions", "Backend", "BACKENDS", "backend", "backend_names", "default_backend", "runtime_precisions",
    "takers", "precision_choosers",
    "READS", "DEVICES",
]

#: what a backend takes: a PyTorch variant (with weights), an ONNX graph (or OpenVINO IR), or a TensorRT engine
READS = ("variant", "onnx", "engine")
#: the backends among those that read ``onnx`` which also read an OpenVINO IR (``.xml`` + ``.bin``)
READS_IR = ("openvino",)
#: the devices a backend may run on (``--device``)
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class RunnerOptions:
    """Run-time settings a command passes to whichever backend it opens.

    ``device``: None means the backend's first (``Backend.resolve``: cpu, cuda for TensorRT).
    ``precision``: None means what the model file carries (ONNX, engines) or FP32
    (PyTorch); OpenVINO reads it as its inference precision hint.
    """

    device: str | None = None
    precision: str | None = None
    threads: int | None = None
    streams: int | None = None
    cuda_graph: bool = False
    compile: bool = False
    providers: list[str] | None = None
    allow_host_code: bool | None = None
    #: compute what the graph says (every check of numerics); False: the runtime's own defaults, which may
    #: rewrite numerics for speed (timing only: onnxruntime's ``WeightBiasQuantization``, see runners.onnxrt)
    exact: bool = True
    #: how input sizes are served (``deploy.shapes``): dynamic, or one executable per size (``static``)
    shapes: ShapePolicy = field(default_factory=ShapePolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", canonical(self.precision))
        object.__setattr__(self, "shapes", as_policy(self.shapes))  # a mode name ("static") is read as its policy

    def with_(self, **changes: Any) -> RunnerOptions:
        return replace(self, **changes)


@dataclass(frozen=True)
class Backend:
    """One runtime: what it reads, where it runs, what it offers, and how to open it."""

    name: str
    reads: str  # one of READS
    devices: tuple[str, ...]
    #: run-time precision choices (``--precision``); () when precision comes from the model file
    precisions: tuple[str, ...]
    #: the distribution that must be importable, and the pip hint when it is not
    module: str
    install: str
    summary: str
    make: Callable[[Any, RunnerOptions], Runner] = field(repr=False, compare=False)
    #: imports the runtime and raises ``BackendUnavailable`` with its own message (a finer check than
    #: the module being findable: stub or placeholder packages are findable too)
    probe: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: the run-time options it takes beyond device, precision and threads: ``compile``, ``cuda_graph``,
    #: ``streams`` (queries in flight), ``providers``, ``per_layer`` (``benchmark --per-layer``), ``shapes``
    #: (a ``deploy.shapes.ShapePolicy`` changes how it serves sizes; others run every size one way)
    takes: frozenset[str] = frozenset()
    #: what this machine must also have for these options (``BackendUnavailable``), or what the options
    #: ask that its CPU cannot do (``OptionError``); may import the runtime (``check_here``)
    check: Callable[[RunnerOptions], None] | None = field(default=None, repr=False, compare=False)
    #: what the options ask that this backend cannot do on any machine (``OptionError``); imports nothing
    #: (``check_options``)
    rules: Callable[[RunnerOptions], None] | None = field(default=None, repr=False, compare=False)
    #: Triton: the instance kinds its Triton backend serves, and whether the config names that backend
    #: (``backend: "openvino"``, with parameters) instead of a platform
    triton_kinds: tuple[str, ...] = ()
    triton_named: bool = False
    #: how messages name the runtime (PyTorch, TensorRT...)
    title: str = ""
    #: how ``benchmark --per-layer`` times its layers (``deploy.commands.bench.layer_times``): ``session``
    #: (onnxruntime's own profiler), ``perf_count`` (OpenVINO's counters), ``iprofiler`` (TensorRT);
    #: set exactly where ``takes`` has ``per_layer``
    profiler: str | None = None

    def installed(self) -> bool:
        """Whether the runtime can be imported here (checked without importing it where possible)."""
        if self.probe is not None:
            try:
                self.probe()
            except BackendUnavailable:
                return False
            return True
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def require(self) -> None:
        """``BackendUnavailable`` (exit 1) saying what is missing for this backend to run at all: the
        runtime (with what to install) or, for CUDA-only backends, a CUDA device. Checked before any
        model file is read, so that a user with a good engine learns first what the machine lacks."""
        if self.probe is not None:
            self.probe()
        elif not self.installed():
            raise BackendUnavailable(f"{self.name} is not installed here: {self.install}")
        if self.devices == ("cuda",):
            import torch

            if not torch.cuda.is_available():
                raise BackendUnavailable(f"{self.name} needs a CUDA GPU, and PyTorch sees none on this machine")

    def check_reads(self, reads: str | None, source: Any = None) -> None:
        """``OptionError`` unless this backend runs what ``reads`` names (``variant``, ``onnx``, ``engine``;
        None: nothing was given), and ``source`` if it is an OpenVINO IR."""
        if reads is None or (reads == "variant" and self.reads != "variant"):  # no file given: say which
            raise OptionError(f"--backend {self.name} needs {_NEEDS[self.reads]}")
        if reads != self.reads:
            raise OptionError(
                f"--backend {self.name} contradicts --{reads}: {_WHAT[reads]} runs on "
                f"{' or '.join(backend_names(reads))}"
            )
        if reads == "onnx" and source is not None and is_ir(source) and self.name not in READS_IR:
            raise OptionError(f"{Path(source).name} is an OpenVINO IR: run it with --backend "
                              f"{' or '.join(READS_IR)}, not {self.name}")

    def resolve(self, options: RunnerOptions | None = None) -> RunnerOptions:
        """``options`` with what was left to this backend filled in: the device (its first) and the
        run-time precision (its first choice: fp32 for PyTorch, auto for OpenVINO; None: the file's own)."""
        o = options or RunnerOptions()
        return o.with_(device=o.device or self.devices[0],
                       precision=o.precision or (self.precisions[0] if self.precisions else None))

    def check_here(self, options: RunnerOptions) -> None:
        """``require``, then what ``options`` need of this machine (a CUDA provider, native BF16...)."""
        options = self.resolve(options)
        self.require()
        if self.rules is not None:  # what no machine runs comes first
            self.rules(options)
        if self.check is not None:
            self.check(options)
        if options.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise BackendUnavailable("--device cuda: no CUDA device is visible to PyTorch here")

    def check_options(self, options: RunnerOptions) -> None:
        """``OptionError`` (usage, exit 2) for options this backend cannot honour (reads no file, imports
        nothing): the device, the options it does not take, the precision, counts below one."""
        options = self.resolve(options)
        if options.device not in DEVICES:
            raise OptionError(f"unknown device {options.device!r}: choose {' or '.join(DEVICES)}")
        if options.device not in self.devices:
            raise OptionError(
                f"--backend {self.name} runs on {' or '.join(self.devices)}, not --device {options.device}"
            )
        for option, flag, asked in (("compile", "--compile", options.compile),
                                    ("cuda_graph", "--cuda-graph", options.cuda_graph),
                                    ("streams", f"--streams {options.streams}", (options.streams or 1) > 1),
                                    ("providers", "--provider", bool(options.providers))):
            if asked and option not in self.takes:
                which = words(takers(option), "or")
                raise OptionError(f"{flag} applies to --backend {which} only ({which} option); "
                                  f"{self.name} does not take it")
        for flag, count in (("--streams", options.streams), ("--threads", options.threads)):
            if count is not None and count < 1:
                raise OptionError(f"{flag} must be >= 1, got {count}")
        if options.precision is not None and options.precision not in self.precisions:
            if not self.precisions:
                raise OptionError(
                    f"--precision applies to --backend {words(precision_choosers(self.reads), 'or')}; "
                    f"{self.name} runs the precision its {self.reads} file was built with"
                )
            raise OptionError(
                f"--backend {self.name} offers --precision {', '.join(self.precisions)}, not {options.precision}"
            )
        if self.rules is not None:
            self.rules(options)

    def open(self, source: Any, options: RunnerOptions | None = None) -> Runner:
        """A runner (not yet active) for ``source``: a path for ONNX/engine backends, a module for PyTorch."""
        options = self.resolve(options)
        if self.reads == "onnx":
            self.check_reads("onnx", source)
        self.require()
        self.check_options(options)
        return self.make(source, options)


def _torch(model: Any, o: RunnerOptions) -> Runner:
    from .runners.torch_runner import TorchRunner

    return TorchRunner(model, device=o.device or "cpu", precision=o.precision or "fp32", compile=o.compile, threads=o.threads)


def _torch_rules(o: RunnerOptions) -> None:
    if o.precision == "fp16" and o.device == "cpu":
        raise OptionError("--precision fp16 with PyTorch needs --device cuda (CPU kernels are FP32)")


def _check_onnxruntime(o: RunnerOptions) -> None:
    from .runners.onnxrt import available_providers

    have = available_providers()
    if not have:
        raise BackendUnavailable("onnxruntime is not installed: pip install 'convmlp-deploy[cpu]' (or [gpu])")
    if o.device == "cuda" and "CUDAExecutionProvider" not in have:
        raise BackendUnavailable(f"--device cuda: this onnxruntime has no CUDAExecutionProvider (available: "
                                 f"{', '.join(have)}); install onnxruntime-gpu")


def _check_tensorrt(o: RunnerOptions) -> None:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT engines need a CUDA device; this PyTorch sees none")


def _check_openvino(o: RunnerOptions) -> None:
    from .runners.openvino import OpenVINORunner

    OpenVINORunner("", precision=o.precision or AUTO).check_precision()


def _onnxruntime(path: Any, o: RunnerOptions) -> Runner:
    from .runners.onnxrt import OnnxRuntimeRunner

    return OnnxRuntimeRunner(Path(path), providers=o.providers or [o.device or "cpu"], threads=o.threads, exact=o.exact)


def _tensorrt(path: Any, o: RunnerOptions) -> Runner:
    from .runners.tensorrt import TensorRTRunner

    return TensorRTRunner(Path(path), cuda_graph=o.cuda_graph, allow_host_code=o.allow_host_code, shapes=o.shapes)


def _probe_tensorrt() -> None:
    from .trt.version import import_tensorrt

    import_tensorrt()


def _openvino(path: Any, o: RunnerOptions) -> Runner:
    from .runners.openvino import OpenVINORunner

    return OpenVINORunner(Path(path), precision=o.precision or AUTO, threads=o.threads, streams=o.streams,
                          shapes=o.shapes)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("torch", "variant", ("cpu", "cuda"), ("fp32", "fp16"), "torch", "pip install torch",
                "PyTorch eager (or torch.compile), the reference", _torch,
                takes=frozenset({"compile"}), rules=_torch_rules, title="PyTorch"),
        Backend("onnxruntime", "onnx", ("cpu", "cuda"), (), "onnxruntime",
                "pip install 'convmlp-deploy[cpu]' (or [gpu] for onnxruntime-gpu)",
                "onnxruntime, CPU or CUDA execution provider", _onnxruntime,
                takes=frozenset({"providers", "per_layer"}), check=_check_onnxruntime, triton_kinds=("gpu", "cpu"),
                title="onnxruntime", profiler="session"),
        Backend("tensorrt", "engine", ("cuda",), (), "tensorrt",
                "pip install 'convmlp-deploy[trt]' on a machine with an NVIDIA GPU",
                "a TensorRT engine built by 'convmlp-deploy build'", _tensorrt, _probe_tensorrt,
                takes=frozenset({"cuda_graph", "streams", "shapes", "per_layer"}), check=_check_tensorrt,
                triton_kinds=("gpu",), title="TensorRT", profiler="iprofiler"),
        Backend("openvino", "onnx", ("cpu",), (AUTO, "fp32", "bf16", "fp16"), "openvino",
                "pip install 'convmlp-deploy[openvino]'",
                "OpenVINO on the CPU: FP32, BF16 (AMX / AVX512_BF16), Q/DQ graphs as INT8", _openvino,
                takes=frozenset({"streams", "shapes", "per_layer"}), check=_check_openvino, triton_kinds=("cpu",),
                triton_named=True,
                title="OpenVINO", profiler="perf_count"),
    )
}


def takers(option: str) -> list[str]:
    """The backends that take run-time ``option`` (``Backend.takes``)."""
    return [n for n, b in BACKENDS.items() if option in b.takes]


def precision_choosers(reads: str | None = None) -> list[str]:
    """The backends that choose ``--precision`` at run time for what ``reads`` names (every one that
    chooses it, where none reads that)."""
    choosers = [n for n, b in BACKENDS.items() if b.precisions]
    return [n for n in choosers if BACKENDS[n].reads == reads] or choosers


def backend(name: str) -> Backend:
    """The backend called ``name``; ``ValueError`` (usage) naming the choices otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise OptionError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}") from None


def backend_names(reads: str | None = None) -> list[str]:
    """Backend names, optionally only those that read ``reads`` (``variant``, ``onnx``, ``engine``)."""
    return [n for n, b in BACKENDS.items() if reads is None or b.reads == reads]


#: how messages name what a backend reads
_WHAT = {"variant": "a PyTorch --variant", "onnx": "an ONNX graph", "engine": "a TensorRT engine"}
#: how messages name the option that gives what a backend reads
_NEEDS = {"variant": "--variant", "onnx": "--onnx PATH",
          "engine": "--engine PATH (build one with 'convmlp-deploy build')"}


def runtime_precisions() -> tuple[str, ...]:
    """Every ``--precision`` some backend chooses at run time, in the vocabulary's order."""
    offered = {p for b in BACKENDS.values() for p in b.precisions}
    return tuple(p for p in (*("fp32", "fp16", "bf16", "int8"), AUTO) if p in offered)


def default_backend(reads: str, source: Any = None) -> str:
    """The backend a file or variant runs on when ``--backend`` is not given (an OpenVINO IR: openvino)."""
    if reads == "onnx" and source is not None and is_ir(source):
        return "openvino"
    return {"variant": "torch", "onnx": "onnxruntime", "engine": "tensorrt"}[reads]
