"""The ``export`` command's option group (``export_options``) and the output-folder type it uses; both are
offered through ``deploy.cli.options`` beside the other groups."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..artifacts import unwritable
from ..errors import OptionError, words
from .options import Resolution

__all__ = ["OutputFolder", "InputSize", "export_options"]


class OutputFolder(click.ParamType):
    """A folder the command writes into (created with its parents if missing), checked while parsing: not
    a file, and the folder it is or will be made in exists as a folder and takes a new file (a temp file is
    made and removed there)."""

    name = "DIR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        p = Path(os.fspath(value))
        existing = next((q for q in (p, *p.parents) if q.exists() or q.is_symlink()), Path("."))
        if not existing.is_dir():
            self.fail(f"{existing} is a file, not a folder", param, ctx)
        problem = unwritable(existing)
        if problem:
            self.fail(problem, param, ctx)
        return p


class InputSize(Resolution):
    """``N`` (square) or ``HxW``: the resolution the network was trained at (a side below 32 is refused
    with the other preprocessing contradictions, by ``convmlp.weights.check_cfg``)."""

    name = "N|HxW"
    malformed = "is not N or HxW (e.g. 32 or 48x64)"
    min_side = None


#: the ``ExportConfig`` fields the command line sets, one option each
FIELDS = ("num_classes", "labels", "output_dir", "exporter", "opset", "fp16", "features", "openvino", "int8",
          "calibration", "calibration_count", "calibration_method", "int8_layout", "int8_fallback",
          "int8_fallback_limit", "simplifier", "input_size", "mean", "std", "crop_pct", "interpolation")


def export_options() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``export`` command's own options, one per ``export.config.ExportConfig`` field, each defaulting
    to that field's default, with choices from the tables that own them (``EXPORTERS``, ``METHODS``,
    ``LAYOUTS``, fallback ``MODES``, ``SIMPLIFIERS``); the command gets ``options: dict`` (ExportConfig's
    keyword arguments). An INT8-only option given without ``--int8`` is refused (exit 2)."""
    from export.config import INT8_ONLY

    options = _options()

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in FIELDS}
            ctx = click.get_current_context()
            flags = [p.opts[0] for p in ctx.command.params if p.name in INT8_ONLY and ctx.get_parameter_source(
                p.name) in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)]
            if flags and not given["int8"]:
                raise OptionError(f"{words(flags)} appl{'ies' if len(flags) == 1 else 'y'} to --int8 exports: add "
                                  "--int8 --calibration DIR")
            for n in ("labels", "calibration"):
                given[n] = Path(given[n]) if given[n] else None
            for n in ("mean", "std"):
                given[n] = tuple(given[n]) if given[n] else None
            return f(*args, options=given, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def _options() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The options of ``FIELDS``, in that order (the order ``--help`` lists them)."""
    from convmlp.preprocess import INTERPOLATIONS
    from export.config import default
    from export.fallback import MODES
    from export.int8 import LAYOUTS, METHODS
    from export.onnx import EXPORTERS
    from export.simplify import SIMPLIFIERS

    opsets = ", ".join(f"{e.default_opset} with {n} ({e.opset_range})" for n, e in EXPORTERS.items())
    return [
        click.option("--num-classes", type=click.IntRange(min=1), default=default("num_classes"),
                     help="Classes of the head [default: the --weights checkpoint's head, else 1000]."),
        click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=default("labels"),
                     help="Text file of class names, one per line, recorded in the classifier graphs (predict, "
                          "deploy.load and triton then name classes)."),
        click.option("--output-dir", "-o", type=OutputFolder(), default=str(default("output_dir")),
                     help="Where artifacts go (created if missing)."),
        click.option("--exporter", type=click.Choice(list(EXPORTERS)), default=default("exporter"),
                     help="torch.onnx exporter: dynamo (torch.export, the default) or the deprecated TorchScript one."),
        click.option("--opset", type=int, default=default("opset"), help=f"ONNX opset [default: {opsets}]."),
        click.option("--fp16/--no-fp16", default=default("fp16"),
                     help="Also write the mixed-precision FP16 graph for TensorRT."),
        click.option("--features", is_flag=True, default=default("features"),
                     help="Also write the F1..F4 backbone graph."),
        click.option("--openvino", is_flag=True, default=default("openvino"),
                     help="Also write OpenVINO IR (.openvino.xml + .bin) of each graph but the FP16 one; needs "
                          "[openvino]."),
        click.option("--int8", is_flag=True, default=default("int8"),
                     help="Also write the INT8 Q/DQ graph (INT8+FP16 for TensorRT); needs --calibration."),
        click.option("--calibration", type=click.Path(exists=True, file_okay=False), default=default("calibration"),
                     help="Folder of images (searched recursively) to calibrate --int8 on."),
        click.option("--calibration-count", type=click.IntRange(min=1), default=default("calibration_count"),
                     help="Images calibrated on, picked reproducibly; up to 64 others are held out for validation."),
        click.option("--calibration-method", type=click.Choice(METHODS), default=default("calibration_method"),
                     help="How activation ranges are chosen from the calibration outputs."),
        click.option("--int8-layout", type=click.Choice(LAYOUTS), default=default("int8_layout"),
                     help="INT8 graph for TensorRT (symmetric, INT8+FP16) or for x86 CPU runtimes (u8s8, FP32 "
                          "elsewhere)."),
        click.option("--int8-fallback", type=click.Choice(MODES), default=default("int8_fallback"),
                     help="When the INT8 graph fails its gate: auto moves the layers that cost the most accuracy "
                          "back to FP16 (FP32 in the cpu layout) until it passes; off writes nothing."),
        click.option("--int8-fallback-limit", type=click.IntRange(min=1), default=default("int8_fallback_limit"),
                     help="Most layers --int8-fallback may move back to float [default: a quarter of the quantized "
                          "ones]."),
        click.option("--simplifier", type=click.Choice(SIMPLIFIERS), default=default("simplifier"),
                     help="Graph simplifier; its graph is kept only if no larger and still dynamic."),
        click.option("--input-size", type=InputSize(), default=None,
                     help="Resolution the network was trained at (N or HxW), recorded in every graph "
                          "[default: the checkpoint's pretrained_cfg, else the variant's 224]."),
        click.option("--mean", type=float, nargs=3, default=None, metavar="R G B",
                     help="Normalisation mean the network was trained with [default: the checkpoint's, else "
                          "ImageNet's]."),
        click.option("--std", type=float, nargs=3, default=None, metavar="R G B",
                     help="Normalisation std the network was trained with [default: the checkpoint's, else "
                          "ImageNet's]."),
        click.option("--crop-pct", type=float, default=None,
                     help="Centre-crop fraction at the input size, in (0, 1] [default: the checkpoint's, else "
                          "0.875]."),
        click.option("--interpolation", type=click.Choice(INTERPOLATIONS), default=None,
                     help="Resize filter [default: the checkpoint's, else bicubic]."),
    ]
