"""The metadata ``export`` writes into every graph, defined once: its keys, the writer, and the parser.

A graph carries it as ONNX ``metadata_props``; an OpenVINO IR as ``rt_info`` section
``convmlp_deploy`` (``ir.py``); a TensorRT engine's sidecar copies the preprocessing keys
(``engine.py``). Values are strings: numbers as text, lists and objects as JSON.
``deploy.modelfile.describe`` is the one reader; it turns them into a ``ModelFacts`` record and
infers from the artifact whatever a file does not record.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convmlp.preprocess import INTERPOLATIONS
from convmlp.weights import PretrainedCfg

from ..errors import DeployError, OptionError

__all__ = [
    "KEYS", "INT8_KEYS", "IR_KEYS", "PREPROCESSING_KEYS", "SIDECAR_KEYS", "graph_metadata", "preprocessing_metadata",
    "int8_metadata", "preprocessing", "OPTIONAL_KEYS", "read_labels", "labels_metadata", "labels", "fallback_metadata",
]

#: every key a graph exported by this tool carries, and what it holds
KEYS: dict[str, str] = {
    "variant": "ConvMLP variant: s, m or l",
    "kind": "classifier (logits) or features (f1..f4)",
    "precision": "what the graph computes in: fp32, fp16 or int8 (deploy.precision)",
    "num_classes": "classes of the head (classifiers)",
    "input_name": "the image input's name",
    "output_names": "comma-separated output names",
    "input_layout": "NCHW",
    "input_size": "JSON [3, H, W]: the resolution the weights were trained at",
    "mean": "JSON [r, g, b]: normalisation mean",
    "std": "JSON [r, g, b]: normalisation std",
    "crop_pct": "centre-crop fraction at input_size",
    "interpolation": "resize filter (bicubic...)",
    "checkpoint_sha256": "sha256 of the checkpoint exported from ('' for synthetic or official weights)",
    "weights": "where the weights came from: a path, the official URL, or synthetic(seed=N)",
    "exporter": "torch.onnx exporter: dynamo or torchscript",
    "exporter_versions": "JSON: versions of the exporter's packages",
    "opset": "ONNX opset",
    "producer_versions": "JSON: convmlp-deploy, torch, onnx, onnxscript versions",
}
#: what an INT8 graph adds
INT8_KEYS: dict[str, str] = {
    "quantizer": "quantizer and its version",
    "calibration_images": "how many images calibrated the activation ranges",
    "calibration_method": "minmax, entropy or percentile",
    "int8_layout": "tensorrt (symmetric INT8 + FP16) or cpu (u8s8, FP32 elsewhere)",
    "calibration_files_sha256": "sha256 of the sorted calibration file list",
    "int8_weight_bits": "8, or 7 where the CPU layout, or the IR of either layout, was made on a CPU without "
    "VNNI (export.int8.vnni)",
}
#: what an IR adds (``export --openvino``)
IR_KEYS: dict[str, str] = {
    "source_onnx": "file name of the ONNX graph the IR was converted from",
    "source_onnx_sha256": "its sha256",
    "openvino_version": "the OpenVINO that converted it",
    "ir_float": "how the float parts were converted, where the graph had FP16 ones (the TensorRT-layout INT8 graph)",
}
#: keys a graph carries when asked for
OPTIONAL_KEYS: dict[str, str] = {
    "labels": "JSON list of the class names, one per class (export --labels FILE)",
    "int8_fallback": "JSON: the layers --int8-fallback moved back to float, the error before and after, the "
                     "search time (an INT8 graph that failed its gate without them)",
}
#: the keys that say how to prepare an image
PREPROCESSING_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation")
#: what an engine's sidecar copies from its graph's metadata (the rest it records in its own fields)
SIDECAR_KEYS = (*PREPROCESSING_KEYS, "weights", "labels")


def graph_metadata(
    *,
    variant: str,
    kind: str,
    precision: str,
    num_classes: int,
    input_name: str,
    output_names: list[str],
    cfg: PretrainedCfg,
    checkpoint_sha256: str | None,
    weights: str,
    exporter: str,
    exporter_versions: Mapping[str, str],
    opset: int,
    producer_versions: Mapping[str, str],
) -> dict[str, str]:
    """The ``KEYS`` of one graph, as strings."""
    meta = {
        "variant": variant,
        "kind": kind,
        "precision": precision,
        "num_classes": str(num_classes),
        "input_name": input_name,
        "output_names": ",".join(output_names),
        "input_layout": "NCHW",
        **preprocessing_metadata(cfg),
        "checkpoint_sha256": checkpoint_sha256 or "",
        "weights": weights,
        "exporter": exporter,
        "exporter_versions": json.dumps(dict(exporter_versions)),
        "opset": str(opset),
        "producer_versions": json.dumps(dict(producer_versions)),
    }
    return meta


def preprocessing_metadata(cfg: PretrainedCfg) -> dict[str, str]:
    """The ``PREPROCESSING_KEYS`` of ``cfg``, as strings."""
    return {
        "input_size": json.dumps(list(cfg.input_size)),
        "mean": json.dumps(list(cfg.mean)),
        "std": json.dumps(list(cfg.std)),
        "crop_pct": str(cfg.crop_pct),
        "interpolation": cfg.interpolation,
    }


def int8_metadata(
    *, quantizer: str, images: int, method: str, layout: str, files_sha256: str, weight_bits: int = 8
) -> dict[str, str]:
    """The ``INT8_KEYS`` of a calibrated graph, as strings."""
    return {
        "quantizer": quantizer,
        "calibration_images": str(images),
        "calibration_method": method,
        "int8_layout": layout,
        "calibration_files_sha256": files_sha256,
        "int8_weight_bits": str(weight_bits),
    }


def preprocessing(base: PretrainedCfg, meta: Mapping[str, str]) -> tuple[PretrainedCfg, bool]:
    """``base`` with the preprocessing keys ``meta`` records; and whether it recorded mean and std.

    ``DeployError`` for a recorded value that is not what the writer writes.
    """

    def numbers(key: str, n: int) -> tuple[Any, ...] | None:
        if key not in meta:
            return None
        try:
            vals = json.loads(meta[key])
        except json.JSONDecodeError:
            vals = None
        if not (isinstance(vals, list) and len(vals) == n and all(isinstance(v, (int, float)) for v in vals)):
            raise DeployError(f"model metadata {key!r} is not a list of {n} numbers: {meta[key]!r}")
        return tuple(vals)

    changes: dict[str, Any] = {}
    for key in ("mean", "std"):
        vals = numbers(key, 3)
        if vals is not None:
            changes[key] = tuple(float(v) for v in vals)
    size = numbers("input_size", 3)
    if size is not None:
        changes["input_size"] = tuple(int(v) for v in size)
    if "crop_pct" in meta:
        try:
            changes["crop_pct"] = float(meta["crop_pct"])
        except ValueError:
            raise DeployError(f"model metadata 'crop_pct' is not a number: {meta['crop_pct']!r}") from None
    if meta.get("interpolation"):
        if meta["interpolation"].lower() not in INTERPOLATIONS:
            raise DeployError(f"model metadata interpolation {meta['interpolation']!r} is not one of {INTERPOLATIONS}")
        changes["interpolation"] = meta["interpolation"].lower()
    return dataclasses.replace(base, **changes), "mean" in changes and "std" in changes


def read_labels(path: str | os.PathLike[str], num_classes: int | None = None, option: str = "--labels") -> list[str]:
    """Class names from a text file, one per line (trailing blank lines ignored); ``OptionError`` naming
    ``option`` when it is not UTF-8 text or holds another count than ``num_classes``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"{option} {path}: cannot read it as UTF-8 text ({exc})") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if num_classes is not None and len(names) != num_classes:
        raise OptionError(f"{option} {path}: {len(names)} labels but the model has {num_classes} classes "
                          "(one label per line)")
    return names


def fallback_metadata(record: Mapping[str, Any]) -> dict[str, str]:
    return {"int8_fallback": json.dumps(dict(record))}


def labels_metadata(names: list[str]) -> dict[str, str]:
    return {"labels": json.dumps(list(names))}


def labels(meta: Mapping[str, str]) -> tuple[str, ...] | None:
    """The class names ``meta`` records (``labels``), or None; ``DeployError`` for a malformed record."""
    if not meta.get("labels"):
        return None
    try:
        names = json.loads(meta["labels"])
    except json.JSONDecodeError:
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) and "\n" not in n for n in names)):
        raise DeployError("model metadata 'labels' is not a JSON list of one-line strings: fix or remove it")
    return tuple(names)
