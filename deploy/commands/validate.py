"""Validate any runner against PyTorch FP32 on a grid of input shapes (``validate``, and ``export``'s gates).

``validate_file`` is the command's one call: the file's record (``deploy.modelfile``) decides the
gate (its precision, inferred when not recorded), the reference (its variant, kind and class count)
and what the request may ask; the backend's rules and the runner come from ``deploy.loader``
(``plan_model``, ``open_runner``), so validate words only its own rules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from convmlp.weights import file_sha256

from ..backends import RunnerOptions
from ..compare import ValidationReport, tolerance_for
from ..errors import DeployError, OptionError
from ..loader import ModelPlan, ModelSource, open_runner, plan_model, reference_model
from ..modelfile import ModelFacts, describe, file_format
from ..precision import run_precision
from ..reference import (
    DEFAULT_GRID,
    Shape,
    compare_runner,
    grid_for,
    photo_cases,
    reference_cases,
    sample_images,
    validate_runner,
)

__all__ = [
    "resolve_variant",
    "check_weights",
    "reference_for",
    "check_reference",
    "Validation",
    "validate_file",
    "validate_onnx",
]

# --------------------------------------------------------------------------- model files


def resolve_variant(facts: ModelFacts, variant: str | None) -> str:
    """The variant to build the reference of: the file's, or ``variant`` when it records none."""
    if variant is None and facts.variant is None:
        raise OptionError(f"{facts.name} does not say which variant it is: pass --variant s|m|l")
    if variant is not None and facts.variant is not None and variant != facts.variant:
        raise DeployError(f"{facts.path} is ConvMLP-{facts.variant.upper()}, not ConvMLP-{variant.upper()}")
    return (variant or facts.variant)  # type: ignore[return-value]


def check_weights(facts: ModelFacts, weights: str | os.PathLike[str] | None) -> None:
    """``DeployError`` unless ``weights`` is what the file was exported from (by the recorded sha256)."""
    sha = facts.checkpoint_sha256
    if not sha and weights is not None and facts.synthetic:
        raise DeployError(
            f"{facts.name} was exported from synthetic weights ({facts.weights}), not from a checkpoint: "
            f"validate it without --weights, or export it again with --weights {weights}"
        )
    if sha and weights is None:
        what = facts.weights if facts.format != "engine" else "the checkpoint of its ONNX graph"
        raise DeployError(f"{facts.path} was exported from checkpoint {what or '?'} (sha256 {sha[:12]}...): "
                          "pass it with --weights")
    if sha and weights is not None and Path(weights).is_file() and file_sha256(weights) != sha:
        raise DeployError(f"--weights {weights} is not the checkpoint {facts.name} was exported from "
                          f"(sha256 {sha[:12]}...)")


def reference_for(
    facts: ModelFacts, variant: str | None, weights: str | os.PathLike[str] | None
) -> torch.nn.Module:
    """The PyTorch FP32 model ``facts``' file is checked against; ``OptionError`` when its head and the
    file's class count differ (a graph of a fine-tuned checkpoint needs that checkpoint)."""
    v = resolve_variant(facts, variant)
    check_weights(facts, weights)
    features = facts.kind == "features"
    num_classes = None if weights is not None or features else facts.num_classes
    model = reference_model(v, weights, num_classes=num_classes, features=features)
    if not features and model.num_classes != facts.num_classes:
        raise OptionError(
            f"{facts.name} outputs {facts.num_classes} classes but --weights {weights} has a "
            f"{model.num_classes}-class head: give the checkpoint the file was exported from"
        )
    return model


@dataclass
class Validation:
    """What ``validate`` found: the file's record, the report against PyTorch, the per-layer table."""

    facts: ModelFacts
    report: ValidationReport
    layers: Any = None  # deploy.layer_errors.LayerReport with --per-layer

    @property
    def notes(self) -> list[str]:
        """The facts the file did not record (a served model: the precision its server did not say)."""
        if self.facts.format == "endpoint":
            if "precision" in self.facts.recorded:
                return []
            return [f"{self.facts.name}: the server does not say what precision it computes in: gated as "
                    f"{self.facts.precision} (give --precision)"]
        line = self.facts.inferred_line()
        return ([line] if line else []) + list(self.facts.notes)

    def to_dict(self) -> dict[str, Any]:
        return (self.report.to_dict() | {"model_facts": self.facts.to_dict()}
                | ({"per_layer": self.layers.to_dict()} if self.layers else {}))


def validate_file(
    source: ModelSource,
    *,
    backend_name: str | None = None,
    options: RunnerOptions | None = None,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
    per_layer: bool = False,
    reference_onnx: str | os.PathLike[str] | None = None,
    shapes: Sequence[Shape] | None = None,
    on_case: Callable[[Shape], None] | None = None,
    endpoint: tuple[str, str, str] | None = None,
) -> Validation:
    """``validate``: any graph, IR, engine or served model against PyTorch FP32 at its precision's gate.

    ``endpoint``: (host:port, model name, protocol) of a running KServe-v2 server (``serve``, or NGC Triton
    serving a ``triton`` repository) instead of a file: the grid goes over the wire; the gate is that of
    ``options.precision`` (the served precision) or what the server's config says, else FP32.

    ``images``: a folder of photographs (up to ``MAX_PHOTOS`` used) or a list of image files, added as
    one case on which top-1 agreement is gated. Everything the request contradicts is refused before
    any work (``OptionError``): options an engine or the backend does not take, ``images`` on a features
    model, ``per_layer`` on an FP32 graph or an IR, or with a reference that is not this model's FP32 graph.
    """
    from ..layer_errors import compare_layers, reference_graph

    options = options or RunnerOptions()
    if endpoint is not None:
        return _validate_endpoint(endpoint, source, backend_name, options, images, per_layer,
                                  shapes or DEFAULT_GRID, on_case)
    if source.path is None:
        raise OptionError("give exactly one of --engine or --onnx (or --endpoint HOST:PORT for a served model)")
    plan = _check_request(source, backend_name, options, bool(images), per_layer, reference_onnx)
    photos = _photos(images)
    facts = plan.describe()  # for an engine, what the machine lacks comes before what the sidecar says
    if photos and facts.kind == "features":
        raise OptionError("--images applies to classifier graphs (top-1 agreement); this one outputs features")
    ref_facts = None
    if per_layer:
        if facts.format != "onnx":
            raise OptionError(f"--per-layer compares ONNX graphs on onnxruntime; {facts.name} is an {facts.format}"
                              + (": give the .onnx this IR came from" if facts.format == "ir" else ""))
        if facts.precision == "fp32":
            raise OptionError(f"--per-layer compares a reduced-precision graph with its FP32 graph; {facts.name} "
                              "already is FP32 (validate its FP16 or INT8 graph)")
        ref_facts = describe(reference_onnx or reference_graph(facts), "onnx")
        check_reference(facts, ref_facts)
    if facts.format == "engine":
        report = _validate_engine(facts, plan, source.weights, on_case)
    else:
        label = f"the images in --images {images}" if isinstance(images, (str, os.PathLike)) else "the images given"
        grid = shapes or grid_for(facts.preprocessing.input_size)  # the grid around the recorded input size
        report = _validate_graph(facts, plan, source.weights, photos, grid, on_case, label)
    layers = None
    if ref_facts is not None:
        assert ref_facts.path is not None and facts.path is not None
        layers = compare_layers(facts.path, ref_facts.path, sample_images((1, 3, 224, 224), 0),
                                precision=facts.precision)
    return Validation(facts, report, layers)


#: real photographs at most in the ``images`` case
MAX_PHOTOS = 64


def _photos(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Any]:
    """The image files of ``images``: a folder's (sorted, up to ``MAX_PHOTOS``) or the list given."""
    from convmlp.preprocess import list_images

    if not isinstance(images, (str, os.PathLike)):
        return list(images)
    found = list_images(images)
    if not found:
        raise OptionError(f"--images {images}: no image files in it")
    return found[:MAX_PHOTOS]


def _check_request(
    source: ModelSource, backend_name: str | None, options: RunnerOptions, images: bool, per_layer: bool,
    reference_onnx: Any,
) -> ModelPlan:
    """The plan of ``source`` on its backend (``plan_model``: what the backend runs and takes), after
    validate's own rules; ``OptionError`` for either, before anything is read."""
    if reference_onnx and not per_layer:
        raise OptionError("--reference-onnx goes with --per-layer")
    if reference_onnx and file_format(reference_onnx) != "onnx":
        raise OptionError(f"--reference-onnx {Path(reference_onnx).name} is not an ONNX graph (an OpenVINO IR or an "
                          "engine): give the FP32 .onnx graph")
    if source.engine is not None:
        given = [flag for flag, on in (("--images", images), ("--per-layer", per_layer)) if on]
        if given:
            raise OptionError(f"{given[0]} applies to --onnx (an engine is checked at its profiles' shapes)")
    # --weights names the reference here, not the runner's weights
    plan = plan_model(replace(source, weights=None, pretrained=False), backend_name, options)
    if per_layer and source.onnx is not None and file_format(source.onnx) == "ir":
        raise OptionError("--per-layer compares ONNX graphs on onnxruntime: give the .onnx this IR came from")
    return plan


def check_reference(checked: ModelFacts, reference: ModelFacts) -> None:
    """``OptionError`` unless ``reference`` is an FP32 ONNX graph of the same model as ``checked``."""
    if reference.format != "onnx":
        raise OptionError(f"--reference-onnx {reference.name} is an {reference.format}: give the FP32 ONNX graph")
    if reference.precision != "fp32":
        raise OptionError(f"--reference-onnx {reference.name} computes in {reference.precision}: the per-layer "
                          "reference must be the FP32 graph")
    same = (reference.kind, reference.num_classes, reference.output_names) == (
        checked.kind, checked.num_classes, checked.output_names)
    if not same or (reference.variant and checked.variant and reference.variant != checked.variant):
        def what(f: ModelFacts) -> str:
            classes = f"{f.num_classes}-class " if f.num_classes else ""
            return f"a {classes}{f.kind} of ConvMLP-{(f.variant or '?').upper()} (outputs {', '.join(f.output_names)})"

        raise OptionError(f"--reference-onnx {reference.name} is {what(reference)}, {checked.name} "
                          f"{what(checked)}: give the FP32 graph this one was made from")


def _validate_graph(
    facts: ModelFacts, plan: ModelPlan, weights: Path | None, images: Sequence[str | os.PathLike[str]],
    shapes: Sequence[Shape], on_case: Callable[[Shape], None] | None, photos_label: str = "the images given",
) -> ValidationReport:
    runner = open_runner(plan)  # onnxruntime's device follows --provider
    model = reference_for(facts, plan.source.variant, weights)  # the plan's source has no weights: a file's own
    with runner:
        used = getattr(runner, "precision_used", None)
        label = run_precision(facts.precision, used)
        cases = reference_cases(model, shapes, output_names=runner.output_names)
        if images:
            cases += photo_cases(model, images, facts.preprocessing, output_names=runner.output_names,
                                 what=photos_label)
        return compare_runner(
            runner, cases, tolerance=tolerance_for(facts.precision, used),
            model_label=f"{facts.name} (convmlp_{model.variant} {label})", weights=model.weights_source,
            on_case=on_case, images="images given" if images else None,
        )


def _validate_endpoint(
    endpoint: tuple[str, str, str], source: ModelSource, backend_name: str | None, options: RunnerOptions,
    images: Any, per_layer: bool, shapes: Sequence[Shape], on_case: Callable[[Shape], None] | None,
) -> Validation:
    """A served model against PyTorch FP32 (``validate --endpoint``)."""
    from ..runners.endpoint import EndpointRunner, describe_endpoint, endpoint_facts

    if source.path is not None:
        raise OptionError("give --endpoint or a model file (--onnx/--engine), not both")
    for flag, given in (("--backend", backend_name), ("--per-layer", per_layer), ("--provider", options.providers),
                        ("--threads", options.threads)):
        if given:
            raise OptionError(f"{flag} applies to a model file, not to a served model (--endpoint)")
    url, name, protocol = endpoint
    served = describe_endpoint(url, name, protocol)
    facts = endpoint_facts(served, variant=source.variant, precision=options.precision)
    photos = _photos(images)
    if photos and facts.kind == "features":
        raise OptionError("--images applies to classifiers (top-1 agreement); this model outputs features")
    model = reference_for(facts, source.variant, source.weights)
    runner = EndpointRunner(served)
    with runner:
        cases = reference_cases(model, shapes, output_names=runner.output_names)
        if photos:
            cases += photo_cases(model, photos, facts.preprocessing, output_names=runner.output_names,
                                 what=f"the images in --images {images}")
        report = compare_runner(runner, cases, tolerance=tolerance_for(facts.precision),
                                model_label=f"{name} at {url} (convmlp_{model.variant} {facts.precision})",
                                weights=model.weights_source, on_case=on_case)
    return Validation(facts, report)


def _validate_engine(
    facts: ModelFacts, plan: ModelPlan, weights: Path | None, on_case: Callable[[Shape], None] | None
) -> ValidationReport:
    """A TensorRT engine against PyTorch FP32 at each profile's min/opt/max and odd sizes inside."""
    from ..modelfile.profiles import validation_shapes

    model = reference_for(facts, plan.source.variant, weights)
    runner = open_runner(plan)
    with runner:
        return validate_runner(
            runner, model, shapes=validation_shapes(facts.profiles), tolerance=tolerance_for(facts.precision),
            model_label=f"{facts.name} (convmlp_{model.variant} {facts.precision})", weights=model.weights_source,
            on_case=on_case,
        )


def validate_onnx(
    path: str | os.PathLike[str],
    *,
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    providers: list[str] | None = None,
    backend: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    images: Sequence[str | os.PathLike[str]] = (),
    shapes: Sequence[Shape] | None = None,
    on_case: Callable[[Shape], None] | None = None,
) -> ValidationReport:
    """``validate_file`` for one ONNX graph or IR: its report. ``backend``: a ``deploy.backends`` name that
    reads ONNX (None: onnxruntime, openvino for an IR); ``precision``: its run-time precision (OpenVINO)."""
    source = ModelSource(variant=variant, onnx=Path(path), weights=Path(weights) if weights else None)
    options = RunnerOptions(precision=precision, threads=threads, providers=providers)
    return validate_file(source, backend_name=backend, options=options, images=images, shapes=shapes,
                         on_case=on_case).report
