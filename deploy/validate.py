"""Validate any runner against PyTorch FP32 on a grid of input shapes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convmlp import create_model
from convmlp.model import ConvMLP
from convmlp.weights import synthesize_weights

from .compare import Tolerance, ValidationReport, compare_outputs, tolerance_for
from .errors import DeployError
from .ir import is_ir, read_ir
from .runners.base import Runner
from .runners.torch_runner import TorchRunner

__all__ = [
    "Shape",
    "DEFAULT_GRID",
    "SYNTHETIC_SEED",
    "reference_model",
    "weights_label",
    "sample_images",
    "ReferenceCase",
    "reference_cases",
    "photo_case",
    "compare_runner",
    "validate_runner",
    "validate_onnx",
    "validate_engine",
]

Shape = tuple[int, int, int, int]

#: batch 1 and 3; 224x224; non-square; sides not divisible by 32; 512x512
DEFAULT_GRID: tuple[Shape, ...] = (
    (1, 3, 224, 224),
    (3, 3, 224, 224),
    (1, 3, 192, 320),
    (3, 3, 97, 131),
    (1, 3, 512, 512),
)

SYNTHETIC_SEED = 0


def reference_model(
    variant: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    features: bool = False,
    num_classes: int = 1000,
    seed: int = SYNTHETIC_SEED,
) -> ConvMLP:
    """The PyTorch FP32 model a graph is exported from and checked against.

    With ``weights`` it is that checkpoint; without, deterministic trained-looking
    weights from ``seed`` (see ``synthesize_weights``), so that ``export`` and a
    later ``validate`` without weights compare the same model.
    """
    if weights is not None:
        model = create_model(variant, weights=weights, num_classes=num_classes, features_only=features)
    else:
        model = create_model(variant, num_classes=num_classes, features_only=features)
        synthesize_weights(model, seed)
        model.checkpoint_sha256 = None
    return model.eval()


def weights_label(weights: str | os.PathLike[str] | None, seed: int = SYNTHETIC_SEED) -> str:
    return str(weights) if weights is not None else f"synthetic(seed={seed})"


def sample_images(shape: Shape, seed: int) -> np.ndarray:
    """Image-like inputs: smooth per-sample structure plus fine noise, in normalised units."""
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(b, c, max(2, h // 32), max(2, w // 32), generator=gen) * 1.5
    x = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    x = x + 0.3 * torch.randn(b, c, h, w, generator=gen)
    return x.numpy().astype(np.float32)


@dataclass(frozen=True)
class ReferenceCase:
    """One validation input and the PyTorch FP32 outputs for it."""

    shape: Shape
    inputs: np.ndarray
    outputs: dict[str, np.ndarray]
    photos: bool = False  # real photographs rather than the synthetic grid


def reference_cases(
    model: torch.nn.Module,
    shapes: Sequence[Shape] = DEFAULT_GRID,
    *,
    output_names: list[str] | None = None,
    seed: int = 0,
) -> list[ReferenceCase]:
    """Inputs and PyTorch FP32 outputs on each shape, computed once for all backends."""
    cases = []
    with TorchRunner(model, output_names=output_names) as ref:
        for i, shape in enumerate(shapes):
            x = sample_images(shape, seed + i)
            cases.append(ReferenceCase(shape, x, ref.infer(x)))
    return cases


def photo_case(
    model: torch.nn.Module,
    images: Sequence[str | os.PathLike[str]],
    cfg: Any,
    *,
    output_names: list[str] | None = None,
) -> ReferenceCase:
    """One validation case made of real photographs: each image preprocessed by ``cfg`` (the
    variant's weights config), stacked into one batch, with PyTorch FP32's outputs.
    Unreadable images are left out; ``DeployError`` if none is readable."""
    from convmlp.preprocess import ImageError, load_image, preprocess

    batch = []
    for path in images:
        try:
            batch.append(preprocess(load_image(path), cfg))
        except ImageError:
            continue
    if not batch:
        raise DeployError("none of the held-out images could be read")
    x = np.concatenate(batch)
    with TorchRunner(model, output_names=output_names) as ref:
        return ReferenceCase(tuple(x.shape), x, ref.infer(x), photos=True)  # type: ignore[arg-type]


def compare_runner(
    runner: Runner,
    cases: Sequence[ReferenceCase],
    *,
    tolerance: Tolerance,
    model_label: str,
    weights: str,
    on_case: Callable[[Shape], None] | None = None,
) -> ValidationReport:
    """Run ``runner`` (already entered) on each reference case and compare."""
    results = []
    for case in cases:
        if on_case:
            on_case(case.shape)
        results.append(
            compare_outputs(case.shape, case.outputs, runner.infer(case.inputs), tolerance, photos=case.photos)
        )
    return ValidationReport(runner.name, model_label, weights, tolerance, results)


def validate_runner(
    runner: Runner,
    model: torch.nn.Module,
    *,
    shapes: Sequence[Shape] = DEFAULT_GRID,
    tolerance: Tolerance,
    model_label: str,
    weights: str,
    seed: int = 0,
    on_case: Callable[[Shape], None] | None = None,
) -> ValidationReport:
    """Run ``runner`` (already entered) and PyTorch FP32 on each shape; compare."""
    cases = reference_cases(model, shapes, output_names=runner.output_names, seed=seed)
    return compare_runner(
        runner, cases, tolerance=tolerance, model_label=model_label, weights=weights, on_case=on_case
    )


# --------------------------------------------------------------------------- files


def _graph_metadata(path: Path) -> dict[str, str]:
    """The metadata ``export`` wrote into an ONNX graph (``metadata_props``) or an IR (``rt_info``)."""
    import onnx

    if is_ir(path):
        return read_ir(path).metadata
    if not path.is_file():
        raise DeployError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DeployError(f"{path}: not an ONNX model ({first})") from None
    if not proto.graph.node:
        raise DeployError(f"{path}: not an ONNX model (empty graph)")
    return {p.key: p.value for p in proto.metadata_props}


def _resolve(
    meta: dict[str, str], variant: str | None, weights: str | os.PathLike[str] | None, source: Path
) -> tuple[str, int, bool]:
    """Variant, class count and kind from the artifact's metadata and the caller's options."""
    meta_variant = meta.get("variant") or None
    if variant is None and meta_variant is None:
        raise DeployError(f"{source} does not say which variant it is: pass --variant s|m|l")
    if variant is not None and meta_variant is not None and variant != meta_variant:
        raise DeployError(f"{source} is ConvMLP-{meta_variant.upper()}, not ConvMLP-{variant.upper()}")
    sha = meta.get("checkpoint_sha256") or ""
    if not sha and weights is not None and meta.get("weights", "").startswith("synthetic"):
        raise DeployError(
            f"{source.name} was exported from synthetic weights ({meta['weights']}), not from a checkpoint: "
            f"validate it without --weights, or export it again with --weights {weights}"
        )
    if sha and weights is None:
        raise DeployError(
            f"{source} was exported from checkpoint {meta.get('weights', '?')} (sha256 {sha[:12]}...): "
            "pass it with --weights"
        )
    if sha and weights is not None:
        from convmlp.weights import file_sha256

        if Path(weights).is_file() and file_sha256(weights) != sha:
            raise DeployError(
                f"--weights {weights} is not the checkpoint {source.name} was exported from "
                f"(sha256 {sha[:12]}...)"
            )
    num_classes = int(meta.get("num_classes") or 1000)
    return (variant or meta_variant), num_classes, meta.get("kind") == "features"  # type: ignore[return-value]


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
    shapes: Sequence[Shape] = DEFAULT_GRID,
    on_case: Callable[[Shape], None] | None = None,
) -> ValidationReport:
    """Check any ONNX file written by ``export`` (or compatible), or its OpenVINO IR, against PyTorch FP32.

    ``images``: real photographs added as one more case (classifiers only), on which
    the reduced-precision gates also check top-1 agreement.

    ``backend``: any backend of ``deploy.backends`` that reads ONNX (onnxruntime,
    openvino; None: onnxruntime, or openvino for an IR ``.xml``); ``precision``: its
    run-time precision where it has one (OpenVINO).
    The gate is that of the least exact of the graph's precision and the one the
    backend actually ran (an FP32 graph on OpenVINO BF16 gets the BF16 gate).
    """
    from .backends import RunnerOptions, default_backend
    from .backends import backend as lookup

    b = lookup(backend or default_backend("onnx", path))
    if b.reads != "onnx":
        raise ValueError(f"--backend {backend} does not run ONNX graphs")
    path = Path(path)
    meta = _graph_metadata(path)
    v, num_classes, features = _resolve(meta, variant, weights, path)
    graph_precision = meta.get("precision", "fp32")
    device = "cuda" if providers and providers[0].lower() in ("cuda", "tensorrt", "trt") else "cpu"
    options = RunnerOptions(device=device, providers=providers, precision=precision, threads=threads)
    runner = b.open(path, options)
    model = reference_model(v, weights, features=features, num_classes=num_classes)
    if images and features:
        raise ValueError("--images applies to classifier graphs (top-1 agreement); this one outputs features")
    with runner:
        used = getattr(runner, "precision_used", None)
        label = graph_precision if used in (None, graph_precision) else f"{graph_precision} graph run in {used}"
        cases = reference_cases(model, shapes, output_names=runner.output_names)
        if images:
            from convmlp.weights import PRETRAINED_CFGS

            cases.append(photo_case(model, images, PRETRAINED_CFGS[v], output_names=runner.output_names))
        report = compare_runner(
            runner, cases, tolerance=tolerance_for(graph_precision, used),
            model_label=f"{path.name} (convmlp_{v} {label})", weights=weights_label(weights), on_case=on_case,
        )
    return report


def validate_engine(
    path: str | os.PathLike[str],
    *,
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    on_case: Callable[[Shape], None] | None = None,
) -> ValidationReport:
    """Check a TensorRT engine against PyTorch FP32 at each profile's min/opt/max and odd sizes inside."""
    from .backends import backend
    from .trt.manifest import read_manifest
    from .trt.profiles import validation_shapes

    backend("tensorrt").require()  # say first what this machine lacks, then what the sidecar says
    path = Path(path)
    manifest = read_manifest(path)
    meta = {
        "variant": manifest.variant or "",
        "num_classes": str(manifest.num_classes or 1000),
        "kind": manifest.kind,
        "checkpoint_sha256": manifest.checkpoint_sha256,
        "weights": "the checkpoint of its ONNX graph",
    }
    v, num_classes, features = _resolve(meta, variant, weights, path)
    model = reference_model(v, weights, features=features, num_classes=num_classes)
    from .runners.tensorrt import TensorRTRunner

    with TensorRTRunner(path) as runner:
        report = validate_runner(
            runner, model, shapes=validation_shapes(manifest.profiles), tolerance=tolerance_for(manifest.precision),
            model_label=f"{path.name} (convmlp_{v} {manifest.precision})", weights=weights_label(weights),
            on_case=on_case,
        )
    return report
