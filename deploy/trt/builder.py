"""Build a TensorRT engine (plain plan file + sidecar manifest) from an exported ONNX graph.

Networks are strongly typed: precision comes from the graph (the FP16 ONNX
graph gives an FP16 engine, the FP32 graph an FP32 engine). TensorRT 11 removed
weak typing (``BuilderFlag.FP16``); on TensorRT 10 it is still offered as the
deprecated ``weak_fp16`` option for FP32 graphs. ``plan_build`` decides every
version-dependent setting as a pure function so that both majors are tested
without TensorRT.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convmlp.spec import INPUT_NAME
from convmlp.weights import file_sha256

from ..artifacts import atomic_write_bytes, stage_bytes
from ..errors import DeployError, OptionError
from ..modelfile import ModelFacts, describe, is_ir
from ..modelfile.engine import HARDWARE_COMPAT_LEVELS, EngineManifest, manifest_bytes, manifest_path
from ..modelfile.metadata import SIDECAR_KEYS
from ..modelfile.profiles import ShapeProfile, check_input_names, format_shape
from .version import Messages, cuda_device, import_tensorrt, make_logger, trt_major

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "plan_build",
    "default_engine_path",
    "add_profiles",
    "build_engine",
]

GIB = 1 << 30


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings. ``hardware_compat``: None, ``"ampere+"`` or ``"same-cc"``."""

    workspace_gib: float = 4.0
    opt_level: int = 3
    timing_cache: Path | None = None
    hardware_compat: str | None = None
    version_compatible: bool = False
    #: TensorRT 10 only, deprecated: FP32 graph + BuilderFlag.FP16 (TensorRT picks FP16 kernels)
    weak_fp16: bool = False
    #: allow TF32 math for FP32 graphs (faster, ~1e-3 relative error; off so FP32 engines match FP32 PyTorch)
    tf32: bool = False

    def __post_init__(self) -> None:
        if not self.workspace_gib > 0:
            raise ValueError(f"workspace_gib must be > 0, got {self.workspace_gib}")
        if not 0 <= self.opt_level <= 5:
            raise ValueError(f"opt_level must be 0..5, got {self.opt_level}")
        if self.hardware_compat is not None and self.hardware_compat not in HARDWARE_COMPAT_LEVELS:
            raise ValueError(
                f"hardware_compat must be one of {sorted(HARDWARE_COMPAT_LEVELS)} or None, got {self.hardware_compat!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        return d


@dataclass(frozen=True)
class BuildPlan:
    """Every TensorRT setting ``build_engine`` applies, by TensorRT enum member name."""

    network_flags: tuple[str, ...]
    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...]
    hardware_level: str | None
    workspace_bytes: int
    opt_level: int
    precision: str  # of the engine: "fp32", "fp16" or "int8" (INT8 Q/DQ layers + FP16 elsewhere)


def plan_build(options: BuildOptions, *, graph_precision: str, tensorrt_major: int) -> BuildPlan:
    """Decide network flags, builder flags and precision for one TensorRT major version.

    TensorRT 10: ``STRONGLY_TYPED`` network flag (unless weak typing was asked for).
    TensorRT 11+: every network is strongly typed; no creation flag, no precision flags.
    """
    if graph_precision not in ("fp16", "fp32", "int8"):
        raise OptionError(f"TensorRT builds fp32, fp16 and int8 graphs, not {graph_precision}")
    set_flags: list[str] = []
    clear_flags: list[str] = []
    precision = graph_precision
    if options.weak_fp16:
        if tensorrt_major >= 11:
            raise DeployError(
                "TensorRT 11 removed weak typing (BuilderFlag.FP16): build the FP16 ONNX graph that "
                "'convmlp-deploy export' writes (convmlp_<variant>.fp16.onnx) instead"
            )
        if graph_precision != "fp32":
            raise DeployError(
                f"weak FP16 is for FP32 graphs; this graph is already {graph_precision.upper()}: build it as is"
            )
        network_flags: tuple[str, ...] = ()
        set_flags.append("FP16")
        precision = "fp16"
    elif tensorrt_major >= 11:
        network_flags = ()
    else:
        network_flags = ("STRONGLY_TYPED",)
    if graph_precision == "fp32" and not options.tf32:
        clear_flags.append("TF32")
    if options.version_compatible:
        set_flags.append("VERSION_COMPATIBLE")
    level = HARDWARE_COMPAT_LEVELS[options.hardware_compat] if options.hardware_compat else None
    return BuildPlan(
        network_flags=network_flags,
        set_flags=tuple(set_flags),
        clear_flags=tuple(clear_flags),
        hardware_level=level,
        workspace_bytes=int(options.workspace_gib * GIB),
        opt_level=options.opt_level,
        precision=precision,
    )


def default_engine_path(onnx_path: str | os.PathLike[str]) -> Path:
    """``artifacts/convmlp_s.fp16.onnx`` -> ``artifacts/convmlp_s.fp16.engine``."""
    p = Path(onnx_path)
    return p.with_suffix(".engine") if p.suffix == ".onnx" else p.with_name(p.name + ".engine")


@dataclass
class BuildResult:
    """What ``build_engine`` produced."""

    engine_path: Path
    manifest_path: Path
    manifest: EngineManifest
    build_seconds: float
    engine_bytes: int
    timing_cache: Path | None = None
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": str(self.engine_path),
            "manifest": str(self.manifest_path),
            "build_seconds": round(self.build_seconds, 3),
            "engine_bytes": self.engine_bytes,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            **{k: v for k, v in self.manifest.to_dict().items() if k not in ("format_version",)},
        }


def check_build_inputs(facts: ModelFacts, profiles: Sequence[ShapeProfile]) -> None:
    """Refuse profiles/graphs that cannot make a ConvMLP engine, before TensorRT is touched.

    Profiles are for the one image input the I/O spec names (``convmlp.spec.INPUT_NAME``); the CPU
    INT8 layout (unsigned asymmetric activations) is refused, as TensorRT takes symmetric INT8 only.
    """
    if not profiles:
        raise DeployError("no optimization profile given")
    check_input_names([INPUT_NAME], [facts.input_name])
    if facts.int8_layout == "cpu":
        raise DeployError(
            f"{facts.path} is the CPU INT8 layout (unsigned asymmetric activations), which TensorRT cannot build: "
            "export it with --int8-layout tensorrt"
        )


def _network_flag(name: str) -> int:
    import tensorrt as trt

    members = {"STRONGLY_TYPED": lambda: trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED}
    return 1 << int(members[name]())


def _builder_flag(name: str) -> trt.BuilderFlag:
    import tensorrt as trt

    # lambdas: TensorRT 11 has no BuilderFlag.FP16, and only the flags a plan names are looked up
    members = {
        "FP16": lambda: trt.BuilderFlag.FP16,
        "TF32": lambda: trt.BuilderFlag.TF32,
        "VERSION_COMPATIBLE": lambda: trt.BuilderFlag.VERSION_COMPATIBLE,
    }
    return members[name]()


def _hardware_level(name: str) -> trt.HardwareCompatibilityLevel:
    import tensorrt as trt

    members = {
        "AMPERE_PLUS": lambda: trt.HardwareCompatibilityLevel.AMPERE_PLUS,
        # added in TensorRT 10.9 (the NGC 25.01 image has 10.8)
        "SAME_COMPUTE_CAPABILITY": lambda: trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
    }
    try:
        return members[name]()
    except AttributeError:
        cli = {v: k for k, v in HARDWARE_COMPAT_LEVELS.items()}.get(name, name)
        raise DeployError(
            f"TensorRT {trt.__version__} has no HardwareCompatibilityLevel.{name} (--hardware-compat {cli}); "
            "use --hardware-compat ampere+ or a newer TensorRT"
        ) from None


def add_profiles(
    builder: trt.Builder,
    config: trt.IBuilderConfig,
    input_name: str,
    profiles: Sequence[ShapeProfile],
    messages: Messages,
) -> None:
    """Add one optimization profile per ``ShapeProfile`` for ``input_name``; DeployError naming the shapes
    if TensorRT refuses one (``set_shape`` raises RuntimeError, ``add_optimization_profile`` returns -1)."""
    import tensorrt as trt

    for prof in profiles:
        trt_profile = builder.create_optimization_profile()
        try:
            trt_profile.set_shape(
                input_name, trt.Dims(list(prof.min)), trt.Dims(list(prof.opt)), trt.Dims(list(prof.max))
            )
        except RuntimeError as exc:
            raise DeployError(
                f"TensorRT rejected profile min {format_shape(prof.min)}, opt {format_shape(prof.opt)}, "
                f"max {format_shape(prof.max)} for input {input_name!r}: {exc}"
            ) from None
        if config.add_optimization_profile(trt_profile) < 0:
            raise DeployError(
                f"TensorRT rejected profile min {format_shape(prof.min)}, opt {format_shape(prof.opt)}, "
                f"max {format_shape(prof.max)} for input {input_name!r}: "
                f"{'; '.join(messages.errors()[-3:]) or 'no message'}"
            )


def build_engine(
    onnx_path: str | os.PathLike[str],
    profiles: Sequence[ShapeProfile],
    options: BuildOptions | None = None,
    output: str | os.PathLike[str] | None = None,
) -> BuildResult:
    """Parse ``onnx_path``, build a strongly typed engine with ``profiles``, write plan + sidecar.

    Profiles and the graph are checked before TensorRT is imported; without
    TensorRT this raises ``BackendUnavailable`` and writes nothing. The engine
    and its ``.json`` sidecar replace older ones only after a successful build.
    """
    from convmlp import __version__

    options = options or BuildOptions()
    profiles = list(profiles)
    if is_ir(onnx_path):
        raise OptionError(f"build takes an ONNX graph; {Path(onnx_path).name} is an OpenVINO IR, which runs on OpenVINO "
                          "only (build from the ONNX graph it came from)")
    info = describe(onnx_path, "onnx")
    assert info.path is not None
    check_build_inputs(info, profiles)
    out = Path(output) if output is not None else default_engine_path(info.path)
    if out.resolve() == info.path.resolve():
        raise DeployError(f"output {out} would overwrite the ONNX file")

    import_tensorrt()  # BackendUnavailable with the install hint
    import tensorrt as trt

    gpu_name, cc, cuda_version = cuda_device()
    version = str(trt.__version__)
    plan = plan_build(options, graph_precision=info.precision, tensorrt_major=trt_major(version))

    messages = Messages()
    logger = make_logger(messages)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= _network_flag(name)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(info.path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise DeployError(f"TensorRT cannot parse {info.path}: {'; '.join(errors) or 'unknown error'}")
    net_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    check_input_names([INPUT_NAME], net_inputs)
    input_name = net_inputs[0]
    output_names = [network.get_output(i).name for i in range(network.num_outputs)]

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.opt_level
    for name in plan.set_flags:
        config.set_flag(_builder_flag(name))
    for name in plan.clear_flags:
        config.clear_flag(_builder_flag(name))
    if plan.hardware_level is not None:
        config.hardware_compatibility_level = _hardware_level(plan.hardware_level)
    add_profiles(builder, config, input_name, profiles, messages)

    cache_path = Path(options.timing_cache) if options.timing_cache else None
    if cache_path is not None:
        old = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(old)
        if not config.set_timing_cache(cache, False):
            raise DeployError(f"timing cache {cache_path} does not match this TensorRT/GPU: delete it and rebuild")

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise DeployError(
            f"TensorRT failed to build the engine: {'; '.join(messages.errors()[-3:]) or 'no message'}"
        )
    data = bytes(memoryview(serialized))

    manifest = EngineManifest(
        tensorrt_version=version,
        gpu_name=gpu_name,
        compute_capability=cc,
        cuda_version=cuda_version,
        precision=plan.precision,
        kind=info.kind,
        variant=info.variant,
        num_classes=info.num_classes,
        input_name=input_name,
        output_names=output_names,
        profiles=profiles,
        onnx_sha256=file_sha256(info.path),
        onnx_path=str(info.path),
        build_options=options.to_dict(),
        hardware_compatibility=options.hardware_compat,
        version_compatible=options.version_compatible,
        tool_version=__version__,
        checkpoint_sha256=info.checkpoint_sha256,
        metadata={k: v for k, v in info.metadata.items() if k in SIDECAR_KEYS},
    )
    side = manifest_path(out)
    # Both files go to temp names first; the pair replaces the old one only when both are written.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_side = stage_bytes(manifest_bytes(manifest), side)
    try:
        atomic_write_bytes(out, data)
        os.replace(tmp_side, side)
    except BaseException:
        Path(tmp_side).unlink(missing_ok=True)
        raise
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return BuildResult(out, side, manifest, seconds, len(data), cache_path, messages.lines)
