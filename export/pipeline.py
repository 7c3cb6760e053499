"""The export job: PyTorch -> ONNX (FP32, FP16, INT8, features) -> simplified -> validated -> written.

Every graph is checked with the full ONNX checker and against PyTorch FP32 on
onnxruntime before it is written; with ``openvino=True`` each graph except the
FP16 one is also converted to an OpenVINO IR, which is checked against PyTorch
on OpenVINO (FP32 inference precision) at its graph's gate. Artifacts are
staged next to their final names and renamed into place only when everything
of the run passed, so a failed run never replaces a good artifact.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

import convmlp
from convmlp import PRETRAINED_CFGS, create_model
from convmlp.profile import count_macs, count_params
from convmlp.spec import IOSpec, io_spec
from convmlp.weights import file_sha256, head_classes, read_checkpoint
from deploy.artifacts import atomic_write_json, staged_path
from deploy.compare import Tolerance, ValidationReport, tolerance_for
from deploy.loader import reference_model
from deploy.modelfile.ir import ir_bin_path, is_ir, read_ir
from deploy.modelfile.metadata import (
    fallback_metadata,
    graph_metadata,
    int8_metadata,
    labels_metadata,
    read_labels,
)
from deploy.reference import DEFAULT_GRID, Shape, compare_runner, photo_case, reference_cases
from deploy.runners.onnxrt import OnnxRuntimeRunner
from deploy.runners.openvino import OpenVINORunner

from .errors import ExportError, ExportOptionError
from .fallback import MODES as FALLBACK_MODES
from .fallback import FallbackResult, search
from .fp16 import CONVERTER, FP32_OPS, converter_version, to_fp16
from .int8 import LAYOUT_FLOAT, CalibrationSet, calibration_inputs, calibration_set, quantize_int8
from .onnx import (
    DEFAULT_EXPORTER,
    check_available,
    export_onnx_proto,
    exporter_info,
    exporter_versions,
    op_counts,
    resolve_opset,
    set_metadata,
)
from .openvino import check_openvino, ir_name, openvino_version, write_ir
from .rejected import REJECTED_DIR, Rejected, keep_rejected, remove_rejected
from .simplify import SimplifyResult, simplify

__all__ = ["ExportConfig", "GraphResult", "ExportResult", "Rejected", "run_export", "artifact_paths", "REJECTED_DIR"]


@dataclass
class ExportConfig:
    """What ``convmlp-deploy export`` was asked to do."""

    variant: str
    output_dir: Path = Path("artifacts")
    weights: Path | None = None
    pretrained: bool = False
    #: classes of the head; None: the checkpoint's (``--weights``), else 1000
    num_classes: int | None = None
    #: text file of class names, one per line, recorded in the classifier graphs' metadata (``labels``)
    labels: Path | None = None
    exporter: str = DEFAULT_EXPORTER
    opset: int | None = None  # None: the exporter's default
    fp16: bool = False
    int8: bool = False
    calibration: Path | None = None  # folder of images (recursive) for --int8
    calibration_count: int = 512
    calibration_method: str = "minmax"
    int8_layout: str = "tensorrt"  # or "cpu" (export.int8)
    #: when the INT8 gate fails: "auto" moves the costliest layers back to float (export.fallback), "off" gives up
    int8_fallback: str = "auto"
    #: most layers the fallback may move back to float (None: a quarter of the quantized layers)
    int8_fallback_limit: int | None = None
    #: called as calibration(done, total) while the INT8 graph is calibrated
    calibration_progress: Callable[[int, int], None] | None = None
    features: bool = False
    #: also write each graph but the FP16 one as OpenVINO IR (export.openvino)
    openvino: bool = False
    simplifier: str = "onnxslim"
    shapes: Sequence[Shape] = DEFAULT_GRID
    providers: list[str] | None = None


@dataclass
class GraphResult:
    """One written (or refused) graph."""

    name: str  # "fp32", "fp16", "int8", "features"; "fp32.openvino"... for an IR
    path: Path
    precision: str
    simplify: SimplifyResult
    validation: ValidationReport
    nodes: int
    ops: dict[str, int]
    sha256: str = ""
    size_bytes: int = 0
    #: an IR's weights file (the ``.bin`` beside ``path``), with its sha256
    weights_path: Path | None = None
    weights_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        extra = {"weights_path": str(self.weights_path), "weights_sha256": self.weights_sha256} \
            if self.weights_path else {}
        return {
            "path": str(self.path),
            **extra,
            "precision": self.precision,
            "nodes": self.nodes,
            "ops": self.ops,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "simplification": self.simplify.to_dict(),
            "validation": self.validation.to_dict(),
        }


@dataclass
class ExportResult:
    config: ExportConfig
    graphs: list[GraphResult]
    report: dict[str, Any]
    report_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.validation.passed for g in self.graphs)

    @property
    def failures(self) -> list[str]:
        return [f"{g.name} graph, {f}" for g in self.graphs for f in g.validation.failures]


#: the graphs an OpenVINO IR is written for (the FP16 graph's casts are TensorRT's business;
#: OpenVINO takes FP16 as a run-time precision of the FP32 IR)
IR_OF = ("fp32", "int8", "features")


def artifact_paths(variant: str, output_dir: Path) -> dict[str, Path]:
    """Every file ``export`` may write for ``variant``: graph name (or ``report``) -> path."""
    stem = f"convmlp_{variant}"
    graphs = {
        "fp32": output_dir / f"{stem}.onnx",
        "fp16": output_dir / f"{stem}.fp16.onnx",
        "int8": output_dir / f"{stem}.int8.onnx",
        "features": output_dir / f"{stem}.features.onnx",
    }
    irs = {f"{name}.openvino": output_dir / ir_name(graphs[name].name) for name in IR_OF}
    return {**graphs, **irs, "report": output_dir / f"{stem}.report.json"}


def _versions() -> dict[str, str]:
    from deploy.machine import dist_version

    out = {"convmlp-deploy": convmlp.__version__, "python": platform.python_version()}
    for dist in (
        "torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "onnxslim", "onnxsim", "onnxconverter-common",
    ):
        version = dist_version(dist)
        if version:
            out[dist] = version
    return out


def _metadata(
    cfg: ExportConfig, spec: IOSpec, precision: str, sha: str | None, label: str, opset: int, num_classes: int
) -> dict[str, str]:
    versions = _versions()
    return graph_metadata(
        variant=cfg.variant, kind=spec.kind, precision=precision, num_classes=num_classes,
        input_name=spec.input_names[0], output_names=spec.output_names, cfg=PRETRAINED_CFGS[cfg.variant],
        checkpoint_sha256=sha, weights=label, exporter=cfg.exporter,
        exporter_versions=exporter_versions(cfg.exporter), opset=opset,
        producer_versions={k: versions[k] for k in ("convmlp-deploy", "torch", "onnx", "onnxscript") if k in versions},
    )


def _check_output_dir(path: Path) -> list[Path]:
    """Create ``path`` if needed and check it is writable; return the folders this created (deepest last)."""
    missing = [p for p in [path, *path.parents] if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = staged_path(path / ".write-test")
        probe.unlink()
    except OSError as exc:
        _remove_if_empty(missing)
        raise ExportError(f"output directory {path} is not writable ({exc.strerror or exc})") from None
    return missing


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``flock`` on the folder itself: nothing is left behind), so
    that two exports never write into one folder at once; ``ExportError`` when another holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export is writing into {folder}: wait for it to finish, or give another "
                              "--output-dir") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` while the export runs, so that its clean-up runs as on Ctrl-C:
    staged files and folders, and the quantizer's temporary folders, are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_stale_temp_files(folder: Path) -> list[Path]:
    """This tool's own staged files and folders (``.convmlp_*.tmp``) in ``folder``, left by an export that was
    killed (SIGKILL, power loss); called with the folder's lock held, so none of them is in use."""
    removed = []
    for path in sorted(folder.glob(".convmlp_*.tmp")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _remove_if_empty(created: list[Path]) -> None:
    """Take back the folders a failed run created, if nothing else was put in them."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def stale_artifacts(variant: str, output_dir: Path, written: Sequence[str]) -> list[Path]:
    """Graphs of ``variant`` in ``output_dir`` that a run writing ``written`` (fp32, fp16...) did not write:
    left from an earlier export, and not described by the new report."""
    stale = []
    for name, p in artifact_paths(variant, output_dir).items():
        if name == "report" or name in written:
            continue
        stale += [f for f in ((p, ir_bin_path(p)) if is_ir(p) else (p,)) if f.exists()]
    return stale


def _build_models(cfg: ExportConfig) -> tuple[torch.nn.Module, torch.nn.Module | None, str | None, str]:
    """The classifier (and with ``features`` its F1..F4 backbone, sharing its weights), the checkpoint's
    sha256 and how the report names the weights."""
    model = reference_model(cfg.variant, cfg.weights, pretrained=cfg.pretrained, num_classes=cfg.num_classes)
    features = None
    if cfg.features:
        features = create_model(cfg.variant, features_only=True).eval()
        own = features.state_dict()
        features.load_state_dict({k: v for k, v in model.state_dict().items() if k in own}, strict=True)
    return model, features, model.checkpoint_sha256, model.weights_source


def _quantize(
    cfg: ExportConfig, graph: onnx.ModelProto, calibration: CalibrationSet, log: Callable[[str], None]
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The INT8 Q/DQ graph of the simplified FP32 ``graph``, calibrated on ``calibration``."""
    total = len(calibration.files)
    for line in calibration.skipped:
        log(f"int8: skipped unreadable image {line}")
    log(f"int8: calibrating on {total} images from {calibration.root} ({calibration.method})")
    if not calibration.held_out:
        log("int8: no photograph is held out (too few readable images): the INT8 gate checks the synthetic grid "
            "only, top-1 on real photos is not checked")
    inputs = calibration_inputs(calibration.files, PRETRAINED_CFGS[cfg.variant], skipped=calibration.skipped)

    def progress(done: int) -> None:
        if cfg.calibration_progress is not None:
            cfg.calibration_progress(done, total)

    quantized, facts = quantize_int8(graph, inputs, method=calibration.method, layout=cfg.int8_layout,
                                     progress=progress)
    if facts["clamped_scales"]:
        log(f"int8: {facts['clamped_scales']} Q/DQ scale values raised to the minimum 2^-14 (dead or nearly dead "
            "channels, constant activations)")
    return quantized, facts


def _int8_metadata(calibration: CalibrationSet, facts: dict[str, Any]) -> dict[str, str]:
    return int8_metadata(
        quantizer=f"{facts['quantizer']} {facts['onnxruntime'] or ''}".strip(),
        images=facts["calibration_batches"], method=calibration.method, layout=facts["layout"],
        files_sha256=calibration.sha256, weight_bits=facts["weight_bits"],
    )


def _stage_ir(
    name: str, onnx_file: Path, meta: dict[str, str], paths: dict[str, Path],
    staged: dict[str, Path], staged_dirs: list[Path], log: Callable[[str], None],
) -> str:
    """Convert the staged ONNX graph ``name`` to an IR in a staging folder; return the IR's graph name."""
    ir = f"{name}.openvino"
    folder = Path(tempfile.mkdtemp(prefix=f".{paths[ir].name}.", suffix=".tmp", dir=paths[ir].parent))
    staged_dirs.append(folder)
    data = onnx_file.read_bytes()
    ir_meta = {**meta, "source_onnx": paths[name].name, "source_onnx_sha256": file_sha256(onnx_file),
               "openvino_version": openvino_version()}
    staged[ir] = write_ir(data, folder / paths[ir].name, ir_meta)
    log(f"{ir}: OpenVINO IR, validating on OpenVINO (f32)")
    return ir


def _gate(cfg: ExportConfig, path: Path, cases: list, tol: Tolerance, model_label: str, weights: str
          ) -> ValidationReport:
    """The graph at ``path`` against PyTorch on ``cases``, on onnxruntime (the export's check)."""
    with OnnxRuntimeRunner(path, providers=cfg.providers) as runner:
        return compare_runner(runner, cases, tolerance=tol, model_label=model_label, weights=weights)


#: images the fallback ranks layers on (held-out photographs, else calibration images)
RANKING_IMAGES = 8


def _int8_fallback(
    cfg: ExportConfig, quantized: onnx.ModelProto, float_graph: onnx.ModelProto, net: torch.nn.Module,
    cases: list, tol: Tolerance, calibration: CalibrationSet, staged: dict[str, Path], label: str,
    log: Callable[[str], None],
) -> FallbackResult:
    """``export.fallback.search`` on the failed INT8 graph: ranked on up to ``RANKING_IMAGES`` held-out
    photographs (else calibration images), each candidate gated on the export's own cases."""
    photos = next((c for c in cases if c.photos), None)
    if photos is not None:
        x, ref = photos.inputs[:RANKING_IMAGES], next(iter(photos.outputs.values()))[:RANKING_IMAGES]
        ranked_on = f"{len(x)} held-out photographs"
    else:
        case = photo_case(net, calibration.files[:RANKING_IMAGES], PRETRAINED_CFGS[cfg.variant],
                          what="the calibration images")
        x, ref = case.inputs, next(iter(case.outputs.values()))
        ranked_on = f"{len(x)} calibration images"
    log(f"int8: the graph failed its gate; moving the costliest layers back to "
        f"{LAYOUT_FLOAT[cfg.int8_layout].upper()} (--int8-fallback auto)")

    def gate(candidate: onnx.ModelProto) -> ValidationReport:
        path = staged_path(staged["int8"])
        try:
            path.write_bytes(candidate.SerializeToString())
            return _gate(cfg, path, cases, tol, f"convmlp_{cfg.variant} int8", label)
        finally:
            path.unlink(missing_ok=True)

    result = search(quantized, float_graph, x, ref, gate, tol, ranked_on=ranked_on, limit=cfg.int8_fallback_limit,
                    log=log)
    if result.passed:
        log(f"int8: passes with {len(result.layers)} of {result.quantized_layers} layers in float "
            f"({result.search_s:.1f} s): {', '.join(result.layers)}")
    else:
        log(f"int8: no mix within {result.limit} layers in float passes the gate ({result.search_s:.1f} s)")
    return result


def run_export(cfg: ExportConfig, log: Callable[[str], None] = lambda _msg: None) -> ExportResult:
    """Export, simplify, convert, validate and (only if everything passed) write the artifacts.

    Raises ``ExportError`` / ``CheckpointError`` for bad input; returns a result
    whose ``passed`` is False when a graph failed validation (nothing written then).
    """
    if cfg.weights is not None and cfg.pretrained:
        raise ExportError("give either --weights or --pretrained, not both")
    opset = resolve_opset(cfg.exporter, cfg.opset)  # ExportOptionError before any work
    check_available(cfg.exporter)
    if cfg.openvino:
        check_openvino()
    calibration = None
    if cfg.int8 != (cfg.calibration is not None):
        raise ExportOptionError("--int8 and --calibration DIR go together (INT8 is calibrated on your images)")
    if cfg.int8_fallback not in FALLBACK_MODES:
        raise ExportOptionError(f"--int8-fallback must be {' or '.join(FALLBACK_MODES)}, not {cfg.int8_fallback!r}")
    if cfg.int8_fallback_limit is not None and cfg.int8_fallback_limit < 1:
        raise ExportOptionError(f"--int8-fallback-limit must be >= 1, got {cfg.int8_fallback_limit}")
    if cfg.int8_fallback_limit is not None and not cfg.int8:
        raise ExportOptionError("--int8-fallback-limit applies to --int8 exports: add --int8 --calibration DIR")
    if cfg.weights is not None and cfg.num_classes is not None:
        head = head_classes(read_checkpoint(cfg.weights))
        if head is not None and head != cfg.num_classes:
            raise ExportOptionError(
                f"--num-classes {cfg.num_classes} contradicts --weights {cfg.weights}, whose head has {head} "
                "classes: drop --num-classes (the checkpoint's head decides)"
            )
    names = _read_labels(cfg)  # OptionError before any work
    if cfg.calibration is not None:
        calibration = calibration_set(cfg.calibration, cfg.calibration_count, cfg.calibration_method)
    paths = artifact_paths(cfg.variant, cfg.output_dir)
    created = _check_output_dir(cfg.output_dir)
    try:
        with _exclusive(cfg.output_dir), _sigterm_unwinds():
            for stale in _remove_stale_temp_files(cfg.output_dir):
                log(f"removed {stale}, left by an interrupted export")
            for earlier in remove_rejected(cfg.output_dir, cfg.variant):
                log(f"removed {earlier}, rejected by an earlier export")
            result = _export(cfg, log, opset, calibration, paths, names)
    except BaseException:
        _remove_if_empty(created)
        raise
    if not result.passed:
        _remove_if_empty(created)
    return result


def _read_labels(cfg: ExportConfig) -> list[str] | None:
    """``--labels``, its count checked against the head the export will have (``OptionError``, exit 2)."""
    if cfg.labels is None:
        return None
    classes = cfg.num_classes
    if classes is None and cfg.weights is not None:
        classes = head_classes(read_checkpoint(cfg.weights))
    return read_labels(cfg.labels, classes if classes is not None else 1000)


def _export(
    cfg: ExportConfig, log: Callable[[str], None], opset: int, calibration: CalibrationSet | None,
    paths: dict[str, Path], names: list[str] | None = None,
) -> ExportResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model, features_model, sha, label = _build_models(cfg)
    timings["load_model_s"] = time.perf_counter() - t0
    params, macs = count_params(model), count_macs(model, 224, 224)

    jobs: list[tuple[str, torch.nn.Module, IOSpec, str]] = [
        ("fp32", model, io_spec(cfg.variant, num_classes=model.num_classes), "fp32")
    ]
    if cfg.fp16:
        jobs.append(("fp16", model, jobs[0][2], "fp16"))
    if cfg.int8:
        jobs.append(("int8", model, jobs[0][2], "int8"))
    int8_facts: dict[str, Any] | None = None
    if features_model is not None:
        jobs.append(("features", features_model, io_spec(cfg.variant, features=True), "fp32"))

    staged: dict[str, Path] = {}
    rejected: list[Rejected] = []
    checked_on: dict[str, list] = {}  # graph name -> the cases its gate ran on
    staged_dirs: list[Path] = []  # where IRs are staged (an IR is two files)
    graphs: list[GraphResult] = []
    refs: dict[int, list] = {}
    simplified: dict[int, tuple[onnx.ModelProto, SimplifyResult]] = {}
    notes: list[str] = []
    rewrites: dict[str, dict[str, int]] = {}
    try:
        for name, net, spec, precision in jobs:
            t = time.perf_counter()
            if id(net) not in simplified:
                exported = export_onnx_proto(net, spec, exporter=cfg.exporter, opset=opset)
                timings[f"{name}_export_s"] = time.perf_counter() - t
                for note in exported.notes:
                    if note not in notes:
                        notes.append(note)
                        log(f"{cfg.exporter} exporter: {note}")
                proto = exported.proto
                rewrites[name] = exported.rewrites
                t = time.perf_counter()
                simplified[id(net)] = simplify(proto, spec, cfg.simplifier)
                timings[f"{name}_simplify_s"] = time.perf_counter() - t
            graph, simp = simplified[id(net)]
            float_graph = graph
            if precision == "fp16":
                t = time.perf_counter()
                graph = to_fp16(graph)
                timings["fp16_convert_s"] = time.perf_counter() - t
            elif precision == "int8":
                assert calibration is not None
                t = time.perf_counter()
                graph, int8_facts = _quantize(cfg, graph, calibration, log)
                int8_facts.update(fallback_mode=cfg.int8_fallback, fallback=None)  # None: nothing moved to float
                timings["int8_calibrate_s"] = time.perf_counter() - t
            else:
                graph_copy = onnx.ModelProto()
                graph_copy.CopyFrom(graph)
                graph = graph_copy
            graph_opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), opset)
            meta = _metadata(cfg, spec, precision, sha, label, graph_opset, model.num_classes)
            if precision == "int8" and calibration is not None and int8_facts is not None:
                meta.update(_int8_metadata(calibration, int8_facts))
            if names is not None and spec.kind == "classifier":
                meta.update(labels_metadata(names))
            set_metadata(graph, meta)
            onnx.checker.check_model(graph, full_check=True)
            staged[name] = staged_path(paths[name])
            staged[name].write_bytes(graph.SerializeToString())
            log(f"{name}: {len(graph.graph.node)} nodes ({simp.simplifier}: {simp.reason}), validating on onnxruntime")

            t = time.perf_counter()
            if id(net) not in refs:
                refs[id(net)] = reference_cases(net, cfg.shapes, output_names=spec.output_names)
            cases = refs[id(net)]
            if precision == "int8" and calibration is not None and calibration.held_out:
                # real photographs the calibration did not see (the folder's other images)
                cases = cases + [photo_case(net, calibration.held_out, PRETRAINED_CFGS[cfg.variant])]
            tol: Tolerance = tolerance_for(precision)
            checked_on[name] = cases
            report = _gate(cfg, staged[name], cases, tol, f"convmlp_{cfg.variant} {name}", label)
            timings[f"{name}_validate_s"] = time.perf_counter() - t
            if precision == "int8" and not report.passed and cfg.int8_fallback == "auto":
                assert calibration is not None and int8_facts is not None
                t = time.perf_counter()
                fallback = _int8_fallback(cfg, graph, float_graph, net, cases, tol, calibration, staged, label, log)
                int8_facts["fallback"] = fallback.to_dict()
                timings["int8_fallback_s"] = time.perf_counter() - t
                if fallback.passed and fallback.graph is not None and fallback.report is not None:
                    graph, report = fallback.graph, fallback.report
                    meta.update(fallback_metadata(fallback.record()))
                    set_metadata(graph, meta)
                    onnx.checker.check_model(graph, full_check=True)
                    staged[name].write_bytes(graph.SerializeToString())
            graphs.append(
                GraphResult(name, paths[name], precision, simp, report, len(graph.graph.node), op_counts(graph))
            )
            if cfg.openvino and name in IR_OF:
                t = time.perf_counter()
                ir = _stage_ir(name, staged[name], meta, paths, staged, staged_dirs, log)
                with OpenVINORunner(staged[ir], precision="f32", cache_dir="") as runner:
                    report = compare_runner(
                        runner, cases, tolerance=tol, model_label=f"convmlp_{cfg.variant} {ir}", weights=label
                    )
                info = read_ir(staged[ir])
                graphs.append(GraphResult(
                    ir, paths[ir], precision, simp, report, sum(info.layers.values()), info.layers,
                    weights_path=ir_bin_path(paths[ir]),
                ))
                timings[f"{ir}_convert_validate_s"] = time.perf_counter() - t

        passed = all(g.validation.passed for g in graphs)
        if not passed:
            rejected = keep_rejected(cfg.output_dir, cfg.variant, graphs, staged, checked_on, log)
        if passed:
            for g in graphs:
                g.sha256 = file_sha256(staged[g.name])
                g.size_bytes = staged[g.name].stat().st_size
                if g.weights_path is not None:  # an IR: its .bin first, so the new .xml never meets an old .bin
                    tmp_bin = ir_bin_path(staged[g.name])
                    g.weights_sha256 = file_sha256(tmp_bin)
                    g.size_bytes += tmp_bin.stat().st_size
                    os.replace(tmp_bin, g.weights_path)
                os.replace(staged[g.name], g.path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        for folder in staged_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    timings["total_s"] = time.perf_counter() - t0

    report = {
        "variant": cfg.variant,
        "num_classes": model.num_classes,
        "params": params,
        "gmacs_224": round(macs / 1e9, 4),
        "opset": opset,
        "exporter": {
            "name": cfg.exporter,
            "title": exporter_info(cfg.exporter).title,
            **exporter_versions(cfg.exporter),
            "notes": notes,
            "rewrites": rewrites,
        },
        "simplifier": cfg.simplifier,
        "int8": int8_facts and {**int8_facts, "calibration": calibration.facts() if calibration else None},
        "fp16_converter": (
            {"name": CONVERTER, "version": converter_version(), "fp32_ops": list(FP32_OPS)}
            if cfg.fp16 or cfg.int8 else None
        ),
        "openvino": {"version": openvino_version(), "compress_to_fp16": False, "validated_precision": "f32"}
        if cfg.openvino else None,
        "weights": label,
        "checkpoint_sha256": sha,
        "validation_shapes": [list(s) for s in cfg.shapes],
        "passed": all(g.validation.passed for g in graphs),
        "graphs": {g.name: g.to_dict() for g in graphs},
        "rejected": {r.name: r.to_dict() for r in rejected},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "versions": _versions(),
    }
    if report["passed"]:
        stale = stale_artifacts(cfg.variant, cfg.output_dir, [g.name for g in graphs])
        report["stale"] = [str(p) for p in stale]
        for p in stale:
            log(f"note: {p} is from an earlier export (this run did not write it); it is listed as stale in the report")
    result = ExportResult(cfg, graphs, report, None, timings, rejected)
    if result.passed:
        result.report_path = atomic_write_json(paths["report"], report)
    return result
