"""What an export is asked to do (``ExportConfig``): its fields' defaults are the ``export`` command's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from deploy.reference import Shape

from .onnx import DEFAULT_EXPORTER

__all__ = ["ExportConfig", "default", "INT8_ONLY", "PREPROCESSING"]


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
    #: the validation grid; None: ``deploy.reference.grid_for`` the recorded input size (224: ``DEFAULT_GRID``)
    shapes: Sequence[Shape] | None = None
    #: the network's preprocessing (None: the checkpoint's ``pretrained_cfg``, else the variant's ImageNet
    #: config): one ``PretrainedCfg`` made of them feeds calibration, the held-out images and the metadata
    input_size: tuple[int, int] | None = None  # (H, W)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    providers: list[str] | None = None


#: the preprocessing fields (``convmlp.weights.CFG_KEYS``), each an ``export`` option
PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "interpolation")
#: the fields that only an INT8 export reads (``--calibration`` itself is checked with ``--int8``)
INT8_ONLY = ("calibration_count", "calibration_method", "int8_layout", "int8_fallback", "int8_fallback_limit")


def default(name: str) -> Any:
    """The default of ``ExportConfig``'s field ``name`` (what the command line's option defaults to)."""
    field = next(f for f in fields(ExportConfig) if f.name == name)
    if field.default is MISSING:
        raise ValueError(f"ExportConfig.{name} has no default")
    return field.default
