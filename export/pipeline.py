"""The export job: PyTorch -> ONNX (FP32, FP16, INT8, features) -> simplified -> validated -> written.

A list of named steps (``STEPS``) over one staging area (``export.staging``): the models; the graphs,
exported and simplified once per network; one step per graph, each precision a transformation of the
simplified FP32 graph held to its own gate on onnxruntime after the full ONNX checker (INT8 with its
fallback); the OpenVINO IRs, each checked on OpenVINO (f32) at its graph's gate. The loop then commits
the staging area only when every graph passed (a failed run never replaces a good artifact), and reports.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

import convmlp
from convmlp import create_model
from convmlp.profile import count_macs, count_params
from convmlp.spec import IOSpec, io_spec
from convmlp.weights import (
    PretrainedCfg,
    file_sha256,
)
from deploy.artifacts import atomic_write_json
from deploy.compare import Tolerance, ValidationReport, tolerance_for
from deploy.loader import reference_model
from deploy.modelfile.ir import ir_bin_path, read_ir
from deploy.modelfile.metadata import (
    fallback_metadata,
    graph_metadata,
    int8_metadata,
    labels_metadata,
)
from deploy.reference import (
    ReferenceCase,
    compare_runner,
    grid_for,
    photo_cases,
    reference_cases,
)
from deploy.runners.onnxrt import OnnxRuntimeRunner
from deploy.runners.openvino import OpenVINORunner

from .checks import check_request, preprocessing_cfg
from .config import PREPROCESSING, ExportConfig
from .fallback import FallbackResult, search
from .fp16 import CONVERTER, FP32_OPS, converter_version, to_fp16
from .int8 import (
    LAYOUT_FLOAT,
    CalibrationSet,
    calibration_inputs,
    calibration_set,
    for_openvino,
    quantize_int8,
)
from .onnx import (
    export_onnx_proto,
    exporter_info,
    exporter_versions,
    op_counts,
    set_metadata,
)
from .openvino import openvino_version, write_ir
from .rejected import REJECTED_DIR, Rejected, keep_rejected, remove_rejected
from .simplify import SimplifyResult, simplify
from .staging import (
    IR_OF,
    Staging,
    artifact_paths,
    check_output_dir,
    exclusive,
    remove_if_empty,
    remove_stale_temp_files,
    signals_deferred,
    signals_unwind,
    stale_artifacts,
)

__all__ = [
    "ExportConfig", "GraphResult", "ExportResult", "Rejected", "Step", "STEPS", "run_export", "artifact_paths",
    "stale_artifacts", "REJECTED_DIR", "IR_OF",
]

#: the name under which held-out calibration images are shown (they need not be photographs)
HELD_OUT = "held-out images"
#: the ONNX graphs, in the order the report lists them (each graph's IR after it)
GRAPHS = ("fp32", "fp16", "int8", "features")
#: images the fallback ranks layers on (held-out images, else calibration images)
RANKING_IMAGES = 8


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


# --------------------------------------------------------------------------- the run the steps share


@dataclass
class Network:
    """One PyTorch network (the classifier, or the F1..F4 backbone sharing its weights), exported once:
    its simplified FP32 graph is what each precision transforms, its reference cases what each gate uses."""

    net: torch.nn.Module
    spec: IOSpec
    graph: onnx.ModelProto | None = None
    simplify: SimplifyResult | None = None
    cases: list[ReferenceCase] | None = None


@dataclass
class Run:
    """What the steps read and fill in: the request, the staging area, the networks, the graphs so far
    (with the metadata and cases each was staged and gated with) and the facts the report lists."""

    cfg: ExportConfig
    log: Callable[[str], None]
    opset: int
    calibration: CalibrationSet | None
    labels: list[str] | None
    staging: Staging
    #: the one preprocessing config of this export (calibration, held-out images, metadata)
    pcfg: PretrainedCfg
    t0: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)  # "classifier", "features"
    sha: str | None = None
    weights: str = ""
    params: int = 0
    macs: int = 0
    notes: list[str] = field(default_factory=list)
    rewrites: dict[str, dict[str, int]] = field(default_factory=dict)
    graphs: list[GraphResult] = field(default_factory=list)
    meta: dict[str, dict[str, str]] = field(default_factory=dict)
    checked_on: dict[str, list[ReferenceCase]] = field(default_factory=dict)
    int8_facts: dict[str, Any] | None = None
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def classifier(self) -> Network:
        return self.networks["classifier"]

    def timed(self, key: str, since: float) -> None:
        self.timings[key] = time.perf_counter() - since


@dataclass(frozen=True)
class Step:
    """One named step of the export; ``when``: the ``ExportConfig`` flag it needs (None: always)."""

    name: str
    run: Callable[[Run], None]
    when: str | None = None

    def applies(self, cfg: ExportConfig) -> bool:
        return self.when is None or bool(getattr(cfg, self.when))


# --------------------------------------------------------------------------- the steps


def load_models(run: Run) -> None:
    """The classifier (and with ``features`` its F1..F4 backbone, sharing its weights), its size and MACs."""
    cfg, t = run.cfg, time.perf_counter()
    model = reference_model(cfg.variant, cfg.weights, pretrained=cfg.pretrained, num_classes=cfg.num_classes)
    run.networks["classifier"] = Network(model, io_spec(cfg.variant, num_classes=model.num_classes))
    if cfg.features:
        backbone = create_model(cfg.variant, features_only=True).eval()
        own = backbone.state_dict()
        backbone.load_state_dict({k: v for k, v in model.state_dict().items() if k in own}, strict=True)
        run.networks["features"] = Network(backbone, io_spec(cfg.variant, features=True))
    run.sha, run.weights = model.checkpoint_sha256, model.weights_source
    run.timed("load_model_s", t)
    run.params, run.macs = count_params(model), count_macs(model, 224, 224)


def export_graphs(run: Run) -> None:
    """Each network exported to ONNX and simplified, once (timings under its first graph's name)."""
    cfg = run.cfg
    for key, first in (("classifier", "fp32"), ("features", "features")):
        if key not in run.networks:
            continue
        network, t = run.networks[key], time.perf_counter()
        exported = export_onnx_proto(network.net, network.spec, exporter=cfg.exporter, opset=run.opset)
        run.timed(f"{first}_export_s", t)
        for note in exported.notes:
            if note not in run.notes:
                run.notes.append(note)
                run.log(f"{cfg.exporter} exporter: {note}")
        run.rewrites[first] = exported.rewrites
        t = time.perf_counter()
        network.graph, network.simplify = simplify(exported.proto, network.spec, cfg.simplifier)
        run.timed(f"{first}_simplify_s", t)


def fp32_graph(run: Run) -> None:
    """The classifier's simplified graph as it is, staged and gated."""
    _stage_and_gate(run, "fp32", "fp32", _copy(run.classifier.graph), "classifier")


def fp16_graph(run: Run) -> None:
    """The mixed-precision FP16 graph (``export.fp16``), staged and held to the FP16 gate."""
    t = time.perf_counter()
    graph = to_fp16(run.classifier.graph)
    run.timed("fp16_convert_s", t)
    _stage_and_gate(run, "fp16", "fp16", graph, "classifier")


def int8_graph(run: Run) -> None:
    """The calibrated INT8 Q/DQ graph (``export.int8``), held to the INT8 gate on the grid and the held-out
    images; when it fails and ``int8_fallback`` is ``auto``, the fallback's mix replaces it if that passes."""
    cfg, calibration = run.cfg, run.calibration
    assert calibration is not None
    t = time.perf_counter()
    graph, facts = _quantize(cfg, run.classifier.graph, calibration, run.log, run.pcfg)
    facts.update(fallback_mode=cfg.int8_fallback, fallback=None)  # None: nothing moved to float
    run.int8_facts = facts
    run.timed("int8_calibrate_s", t)
    meta = int8_metadata(
        quantizer=f"{facts['quantizer']} {facts['onnxruntime'] or ''}".strip(),
        images=facts["calibration_batches"], method=calibration.method, layout=facts["layout"],
        files_sha256=calibration.sha256, weight_bits=facts["weight_bits"],
    )
    result = _stage_and_gate(run, "int8", "int8", graph, "classifier", meta, held_out=calibration.held_out)
    if result.validation.passed or cfg.int8_fallback != "auto":
        return
    t = time.perf_counter()
    fallback = _int8_fallback(run, graph, result.validation.tolerance)
    facts["fallback"] = fallback.to_dict()
    run.timed("int8_fallback_s", t)
    if fallback.passed and fallback.graph is not None and fallback.report is not None:
        graph = fallback.graph
        run.meta["int8"].update(fallback_metadata(fallback.record()))
        _check_and_stage(run, "int8", graph, run.meta["int8"])
        result.validation, result.nodes, result.ops = fallback.report, len(graph.graph.node), op_counts(graph)


def features_graph(run: Run) -> None:
    """The F1..F4 backbone's simplified graph as it is, staged and gated."""
    _stage_and_gate(run, "features", "fp32", _copy(run.networks["features"].graph), "features")


def openvino_irs(run: Run) -> None:
    """An OpenVINO IR of each staged graph of ``IR_OF``, validated on OpenVINO (f32) at its graph's gate."""
    for g in [g for g in run.graphs if g.name in IR_OF]:
        t = time.perf_counter()
        ir = f"{g.name}.openvino"
        folder = run.staging.folder(ir)
        source = run.staging[g.name]
        ir_meta = {**run.meta[g.name], "source_onnx": g.path.name, "source_onnx_sha256": file_sha256(source),
                   "openvino_version": openvino_version()}
        graph, requantized = source.read_bytes(), 0
        if g.name == "int8":
            graph, requantized = for_openvino(graph, run.cfg.int8_layout)
        if requantized:
            ir_meta["int8_weight_bits"] = "7"
            run.log(f"{ir}: {requantized} weights re-quantized to 7 bits for OpenVINO (this CPU has no VNNI, "
                    "whose u8s8 kernels would saturate on 8-bit ones)")
        run.staging.add(ir, write_ir(graph, folder / run.staging.paths[ir].name, ir_meta))
        run.log(f"{ir}: OpenVINO IR, validating on OpenVINO (f32)")
        with OpenVINORunner(run.staging[ir], precision="f32", cache_dir="") as runner:
            report = _compare(run, runner, run.checked_on[g.name], g.validation.tolerance, ir)
        info = read_ir(run.staging[ir])
        final = run.staging.paths[ir]
        run.graphs.append(GraphResult(ir, final, g.precision, g.simplify, report, sum(info.layers.values()),
                                      info.layers, weights_path=ir_bin_path(final)))
        run.timed(f"{ir}_convert_validate_s", t)


#: the export, in order; the loop in ``_export`` runs each that applies
STEPS: tuple[Step, ...] = (
    Step("models", load_models),
    Step("graphs", export_graphs),
    Step("fp32", fp32_graph),
    Step("fp16", fp16_graph, when="fp16"),
    Step("int8", int8_graph, when="int8"),
    Step("features", features_graph, when="features"),
    Step("openvino", openvino_irs, when="openvino"),
)


# --------------------------------------------------------------------------- what the steps share


def _copy(graph: onnx.ModelProto | None) -> onnx.ModelProto:
    assert graph is not None
    out = onnx.ModelProto()
    out.CopyFrom(graph)
    return out


def _check_and_stage(run: Run, name: str, graph: onnx.ModelProto, meta: dict[str, str]) -> None:
    set_metadata(graph, meta)
    onnx.checker.check_model(graph, full_check=True)
    run.staging.write(name, graph.SerializeToString())


def _stage_and_gate(
    run: Run, name: str, precision: str, graph: onnx.ModelProto, network: str,
    extra_meta: dict[str, str] | None = None, held_out: list[Path] | None = None,
) -> GraphResult:
    """Give ``graph`` its metadata, check it, stage it and hold it to ``precision``'s gate on the network's
    reference cases (and, given ``held_out``, on those images); the graph's result is added to the run."""
    net = run.networks[network]
    assert net.simplify is not None
    graph_opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), run.opset)
    meta = _metadata(run, net.spec, precision, graph_opset)
    meta.update(extra_meta or {})
    if run.labels is not None and net.spec.kind == "classifier":
        meta.update(labels_metadata(run.labels))
    _check_and_stage(run, name, graph, meta)
    run.log(f"{name}: {len(graph.graph.node)} nodes ({net.simplify.simplifier}: {net.simplify.reason}), "
            "validating on onnxruntime")
    t = time.perf_counter()
    if net.cases is None:
        net.cases = reference_cases(net.net, _shapes(run), output_names=net.spec.output_names)
    cases = list(net.cases)
    if held_out:  # images of the calibration folder that the calibration did not see
        cases += photo_cases(net.net, held_out, run.pcfg)
    report = _gate(run, run.staging[name], cases, tolerance_for(precision), name)
    if held_out:
        run.log(f"{name}: accuracy gate on {report.carried_by}" + (
            "; the synthetic grid checks shapes and finite outputs" if report.carried_by != "synthetic grid"
            else ""))
        if report.gate_note:
            run.log(f"{name}: {report.gate_note}")
    run.timed(f"{name}_validate_s", t)
    result = GraphResult(name, run.staging.paths[name], precision, net.simplify, report, len(graph.graph.node),
                         op_counts(graph))
    run.graphs.append(result)
    run.meta[name], run.checked_on[name] = meta, cases
    return result


def _gate(run: Run, path: Path, cases: list, tol: Tolerance, name: str) -> ValidationReport:
    """The graph at ``path`` against PyTorch on ``cases``, on onnxruntime (the export's check)."""
    with OnnxRuntimeRunner(path, providers=run.cfg.providers) as runner:
        return _compare(run, runner, cases, tol, name)


def _compare(run: Run, runner: Any, cases: list, tol: Tolerance, name: str) -> ValidationReport:
    """``runner`` (entered) against PyTorch on ``cases``; its image case is named as held-out images."""
    return compare_runner(runner, cases, tolerance=tol, model_label=f"convmlp_{run.cfg.variant} {name}",
                          weights=run.weights, images=HELD_OUT)


def _shapes(run: Run) -> list:
    """The validation grid: the one asked for, else the grid around the recorded input size."""
    return list(run.cfg.shapes or grid_for(run.pcfg.input_size))


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


def _metadata(run: Run, spec: IOSpec, precision: str, opset: int) -> dict[str, str]:
    cfg, versions = run.cfg, _versions()
    return graph_metadata(
        variant=cfg.variant, kind=spec.kind, precision=precision, num_classes=run.classifier.net.num_classes,
        input_name=spec.input_names[0], output_names=spec.output_names, cfg=run.pcfg,
        checkpoint_sha256=run.sha, weights=run.weights, exporter=cfg.exporter,
        exporter_versions=exporter_versions(cfg.exporter), opset=opset,
        producer_versions={k: versions[k] for k in ("convmlp-deploy", "torch", "onnx", "onnxscript") if k in versions},
    )


def _quantize(
    cfg: ExportConfig, graph: onnx.ModelProto | None, calibration: CalibrationSet, log: Callable[[str], None],
    pcfg: PretrainedCfg,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The INT8 Q/DQ graph of the simplified FP32 ``graph``, calibrated on ``calibration``."""
    assert graph is not None
    total = len(calibration.files)
    for line in calibration.skipped:
        log(f"int8: skipped unreadable image {line}")
    log(f"int8: calibrating on {total} images from {calibration.root} ({calibration.method})")
    if not calibration.held_out:
        log("int8: no image is held out (too few readable images): the INT8 gate checks the synthetic grid "
            "only, top-1 on held-out images is not checked")
    inputs = calibration_inputs(calibration.files, pcfg, skipped=calibration.skipped)

    def progress(done: int) -> None:
        if cfg.calibration_progress is not None:
            cfg.calibration_progress(done, total)

    quantized, facts = quantize_int8(graph, inputs, method=calibration.method, layout=cfg.int8_layout,
                                     progress=progress)
    if facts["clamped_scales"]:
        log(f"int8: {facts['clamped_scales']} Q/DQ scale values raised to the minimum 2^-14 (dead or nearly dead "
            "channels, constant activations)")
    return quantized, facts


def _int8_fallback(run: Run, quantized: onnx.ModelProto, tol: Tolerance) -> FallbackResult:
    """``export.fallback.search`` on the failed INT8 graph: ranked on up to ``RANKING_IMAGES`` held-out
    images (else calibration images), each candidate gated on the INT8 graph's own cases."""
    cfg, calibration, net = run.cfg, run.calibration, run.classifier
    assert calibration is not None and net.graph is not None
    cases = run.checked_on["int8"]
    held = next((c for c in cases if c.photos and not c.native), None)
    if held is not None:
        x, ref = held.inputs[:RANKING_IMAGES], next(iter(held.outputs.values()))[:RANKING_IMAGES]
        ranked_on = f"{len(x)} {HELD_OUT}"
    else:
        (case,) = photo_cases(net.net, calibration.files[:RANKING_IMAGES], run.pcfg,
                              what="the calibration images", native=False)
        x, ref = case.inputs, next(iter(case.outputs.values()))
        ranked_on = f"{len(x)} calibration images"
    run.log(f"int8: the graph failed its gate; moving the costliest layers back to "
            f"{LAYOUT_FLOAT[cfg.int8_layout].upper()} (--int8-fallback auto)")

    def gate(candidate: onnx.ModelProto) -> ValidationReport:
        path = run.staging.scratch("int8")
        try:
            path.write_bytes(candidate.SerializeToString())
            return _gate(run, path, cases, tol, "int8")
        finally:
            path.unlink(missing_ok=True)

    result = search(quantized, net.graph, x, ref, gate, tol, ranked_on=ranked_on, limit=cfg.int8_fallback_limit,
                    log=run.log)
    if result.passed:
        run.log(f"int8: passes with {len(result.layers)} of {result.quantized_layers} layers in float "
                f"({result.search_s:.1f} s): {', '.join(result.layers)}")
    else:
        run.log(f"int8: no mix within {result.limit} layers in float passes the gate ({result.search_s:.1f} s)")
    return result


# --------------------------------------------------------------------------- the pipeline


def run_export(cfg: ExportConfig, log: Callable[[str], None] = lambda _msg: None) -> ExportResult:
    """Export, simplify, convert, validate and (only if everything passed) write the artifacts.

    Raises ``ExportError`` / ``CheckpointError`` for bad input, ``Interrupted`` on SIGINT / SIGTERM (after
    cleaning up); returns a result whose ``passed`` is False when a graph failed validation (nothing
    written then).
    """
    with signals_unwind():
        opset, labels = check_request(cfg)
        pcfg = preprocessing_cfg(cfg, log)
        calibration = None
        if cfg.calibration is not None:
            calibration = calibration_set(cfg.calibration, cfg.calibration_count, cfg.calibration_method)
        created = check_output_dir(cfg.output_dir)
        try:
            with exclusive(cfg.output_dir):
                for stale in remove_stale_temp_files(cfg.output_dir):
                    log(f"removed {stale}, left by an interrupted export")
                for earlier in remove_rejected(cfg.output_dir, cfg.variant):
                    log(f"removed {earlier}, rejected by an earlier export")
                staging = Staging(artifact_paths(cfg.variant, cfg.output_dir))
                result = _export(Run(cfg, log, opset, calibration, labels, staging, pcfg))
        except BaseException:
            remove_if_empty(created)
            raise
        if not result.passed:
            remove_if_empty(created)
        return result


def _export(run: Run) -> ExportResult:
    """Run each step that applies over the run's staging area, then commit it (or keep the failed graphs)
    and report."""
    cfg = run.cfg
    try:
        for step in STEPS:
            if step.applies(cfg):
                step.run(run)
        run.graphs.sort(key=lambda g: GRAPHS.index(g.name.split(".")[0]))  # each IR after its graph (stable)
        if not all(g.validation.passed for g in run.graphs):
            run.rejected = keep_rejected(cfg.output_dir, cfg.variant, run.graphs, run.staging.files,
                                         run.checked_on, run.log)
            return _result(run, write=False)
        with signals_deferred():  # the new artifacts and their report, or the old ones
            run.staging.commit(run.graphs)
            return _result(run, write=True)
    finally:
        run.staging.close()


def _result(run: Run, *, write: bool) -> ExportResult:
    run.timed("total_s", run.t0)
    report = _report(run)
    result = ExportResult(run.cfg, run.graphs, report, None, run.timings, run.rejected)
    if write:
        result.report_path = atomic_write_json(run.staging.paths["report"], report)
    return result


def _report(run: Run) -> dict[str, Any]:
    """The run's report (``convmlp_{v}.report.json``); a passed run's also lists the stale graphs."""
    cfg, calibration = run.cfg, run.calibration
    report = {
        "variant": cfg.variant,
        "num_classes": run.classifier.net.num_classes,
        "params": run.params,
        "gmacs_224": round(run.macs / 1e9, 4),
        "opset": run.opset,
        "exporter": {
            "name": cfg.exporter,
            "title": exporter_info(cfg.exporter).title,
            **exporter_versions(cfg.exporter),
            "notes": run.notes,
            "rewrites": run.rewrites,
        },
        "simplifier": cfg.simplifier,
        "int8": run.int8_facts and {**run.int8_facts, "calibration": calibration.facts() if calibration else None},
        "fp16_converter": (
            {"name": CONVERTER, "version": converter_version(), "fp32_ops": list(FP32_OPS)}
            if cfg.fp16 or cfg.int8 else None
        ),
        "openvino": {"version": openvino_version(), "compress_to_fp16": False, "validated_precision": "f32"}
        if cfg.openvino else None,
        "weights": run.weights,
        "checkpoint_sha256": run.sha,
        "validation_shapes": [list(s) for s in _shapes(run)],
        "preprocessing": {k: getattr(run.pcfg, k) for k in PREPROCESSING},
        "passed": all(g.validation.passed for g in run.graphs),
        "graphs": {g.name: g.to_dict() for g in run.graphs},
        "rejected": {r.name: r.to_dict() for r in run.rejected},
        "timings_s": {k: round(v, 3) for k, v in run.timings.items()},
        "versions": _versions(),
    }
    if report["passed"]:
        stale = stale_artifacts(cfg.variant, cfg.output_dir, [g.name for g in run.graphs])
        report["stale"] = [str(p) for p in stale]
        for p in stale:
            run.log(f"note: {p} is from an earlier export (this run did not write it); it is listed as stale in "
                    "the report")
    return report
