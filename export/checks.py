"""What an export request is checked for before any work (exit 2 for a contradiction), and what it
resolves to: the opset, the ``--labels`` names and the one preprocessing config of the run."""

from __future__ import annotations

from collections.abc import Callable

from convmlp import PRETRAINED_CFGS
from convmlp.weights import (
    CfgError,
    PretrainedCfg,
    checkpoint_cfg,
    head_classes,
    read_checkpoint,
    resolve_cfg,
)
from deploy.modelfile.metadata import read_labels

from .config import PREPROCESSING, ExportConfig
from .errors import ExportError, ExportOptionError
from .fallback import MODES as FALLBACK_MODES
from .onnx import check_available, resolve_opset
from .openvino import check_openvino

__all__ = ["check_request", "preprocessing_cfg"]


def check_request(cfg: ExportConfig) -> tuple[int, list[str] | None]:
    """The request's contradictions and impossibilities, before any work (``ExportOptionError``: exit 2);
    the opset and the ``--labels`` names."""
    if cfg.weights is not None and cfg.pretrained:
        raise ExportError("give either --weights or --pretrained, not both")
    opset = resolve_opset(cfg.exporter, cfg.opset)
    check_available(cfg.exporter)
    if cfg.openvino:
        check_openvino()
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
    return opset, read_request_labels(cfg)


def preprocessing_cfg(cfg: ExportConfig, log: Callable[[str], None]) -> PretrainedCfg:
    """The export's one preprocessing config: the variant's ImageNet config, under the checkpoint's
    ``pretrained_cfg`` (if it records one), under the options given (which win, said so). A contradiction
    is ``ExportOptionError`` (exit 2), before any work."""
    given = {k: getattr(cfg, k) for k in PREPROCESSING}
    if given["input_size"] is not None:
        given["input_size"] = (3, *given["input_size"])
    try:
        recorded = checkpoint_cfg(cfg.weights) if cfg.weights is not None else {}
        pcfg = resolve_cfg(PRETRAINED_CFGS[cfg.variant], given, recorded)
    except CfgError as exc:
        raise ExportOptionError(f"preprocessing: {exc}") from None
    if recorded:
        won = [f"--{k.replace('_', '-')}" for k in recorded if given.get(k) is not None and given[k] != recorded[k]]
        log(f"preprocessing from {cfg.weights}'s pretrained_cfg ({', '.join(recorded)})"
            + (f"; {', '.join(won)} given on the command line win{'s' if len(won) == 1 else ''}" if won else ""))
    return pcfg


def read_request_labels(cfg: ExportConfig) -> list[str] | None:
    """``--labels``, its count checked against the head the export will have (``OptionError``, exit 2)."""
    if cfg.labels is None:
        return None
    classes = cfg.num_classes
    if classes is None and cfg.weights is not None:
        classes = head_classes(read_checkpoint(cfg.weights))
    return read_labels(cfg.labels, classes if classes is not None else 1000)
