"""convmlp-deploy: export, build, validate, benchmark and serve ConvMLP.

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 validation failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from convmlp import VARIANTS, CheckpointError, __version__
from deploy.backends import BACKENDS
from deploy.present import (
    EVAL_COLUMNS,
    PLOT_FORMATS,
    bench_progress,
    check_output_file,
    count_progress,
    echo_json,
    echo_layer_times,
    echo_layers,
    echo_table,
    echo_validation,
    write_json,
)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_VALIDATION = 0, 1, 2, 3


class ValidationFailed(click.ClickException):
    """Outputs differ beyond tolerance: exit code 3."""

    exit_code = EXIT_VALIDATION


# --------------------------------------------------------------------------- parameter types


class Resolution(click.ParamType):
    """``224`` (square) or ``HxW`` (``320x640``), each side >= 32."""

    name = "RES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        text = str(value).lower().strip()
        parts = text.split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            self.fail(f"{value!r} is not a resolution: use 224 or HxW like 320x640", param, ctx)
        if len(dims) == 1:
            dims = dims * 2
        if len(dims) != 2:
            self.fail(f"{value!r} is not a resolution: use 224 or HxW like 320x640", param, ctx)
        if min(dims) < 32:
            self.fail(f"{value!r}: ConvMLP needs height and width >= 32", param, ctx)
        return dims[0], dims[1]


RESOLUTION = Resolution()
#: every --backend name: deploy/backends.py is the one table (it imports no runtime)
BACKEND_NAMES = tuple(BACKENDS)
VARIANT = click.Choice(VARIANTS, case_sensitive=False)


class GreedyCommand(click.Command):
    """Lets ``multiple=True`` options take several values after one flag.

    ``--resolution 224 512`` is read as ``--resolution 224 --resolution 512``;
    positional arguments therefore go before such options.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        greedy = {
            opt
            for p in self.params
            if isinstance(p, click.Option) and p.multiple
            for opt in p.opts
        }
        out: list[str] = []
        current: str | None = None
        taken = 0
        for i, arg in enumerate(args):
            if arg == "--":
                out.extend(args[i:])
                break
            if arg.startswith("-") and not _looks_numeric(arg):
                current, taken = (arg, 0) if arg in greedy else (None, 0)
                out.append(arg)
                continue
            if current is not None:
                if taken:
                    out.append(current)
                taken += 1
            out.append(arg)
        return super().parse_args(ctx, out)


def _looks_numeric(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- errors


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's expected failures into one-line ``click`` errors (exit 1)."""
    from deploy.errors import DeployError
    from deploy.resources import TooLarge
    from export.errors import ExportError, ExportOptionError

    try:
        yield
    except (ExportOptionError, TooLarge) as exc:
        raise click.UsageError(str(exc)) from None
    except MemoryError as exc:  # the estimate let it through, the allocator did not
        detail = f" ({str(exc).splitlines()[0][:120]})" if str(exc).strip() else ""
        raise click.ClickException(f"out of memory{detail}: try a smaller --batch or --resolution") from None
    except (CheckpointError, ExportError, DeployError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        raise click.ClickException(f"{exc.strerror or exc}{where}") from None


# --------------------------------------------------------------------------- the group


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="convmlp-deploy")
def main() -> None:
    """Deploy ConvMLP (S/M/L): export to ONNX, build FP16 TensorRT engines,
    validate against PyTorch, benchmark and serve.

    Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 validation failed.
    """


@main.command(cls=GreedyCommand)
@click.option("--variant", "-v", type=VARIANT, required=True, help="ConvMLP variant.")
@click.option(
    "--resolution", "-r", type=RESOLUTION, multiple=True, default=("224",),
    help="Input size(s): 224 or HxW; several allowed (--resolution 224 512 320x640).",
)
@click.option("--features", is_flag=True, help="Profile the F1..F4 backbone (no head).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--json-out", type=click.Path(), default=None, help="Also write the JSON to FILE.")
def profile(
    variant: str, resolution: tuple[tuple[int, int], ...], features: bool, as_json: bool, json_out: str | None
) -> None:
    """Parameters and GMACs (multiply-accumulates) at each resolution, batch 1."""
    from convmlp.profile import profile_variant

    if json_out:
        check_output_file(json_out, "--json-out")

    results = [p.to_dict() for p in profile_variant(variant.lower(), list(resolution), features_only=features)]
    if json_out:
        write_json(json_out, results[0] if len(results) == 1 else results)
    if as_json:
        echo_json(results[0] if len(results) == 1 else results)
        return
    echo_table(
        results,
        [("variant", "variant"), ("resolution", "resolution"), ("mparams", "params (M)"), ("gmacs", "GMACs")],
    )


@main.command()
@click.option("--variant", "-v", type=VARIANT, required=True, help="ConvMLP variant.")
@click.option(
    "--weights", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Local checkpoint (official layout; plain or under state_dict/model).",
)
@click.option("--pretrained", is_flag=True, help="Fetch the official ImageNet-1k checkpoint.")
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, help="Classes of the head.")
@click.option(
    "--output-dir", "-o", type=click.Path(file_okay=False), default="artifacts", help="Where artifacts go."
)
@click.option(
    "--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo",
    help="torch.onnx exporter: dynamo (torch.export, the default) or the deprecated TorchScript one.",
)
@click.option(
    "--opset", type=int, default=None,
    help="ONNX opset [default: 18 with dynamo (18..23), 17 with torchscript (17..20)].",
)
@click.option("--fp16/--no-fp16", default=False, help="Also write the mixed-precision FP16 graph for TensorRT.")
@click.option("--features", is_flag=True, help="Also write the F1..F4 backbone graph.")
@click.option("--openvino", is_flag=True,
              help="Also write OpenVINO IR (.openvino.xml + .bin) of each graph but the FP16 one; needs [openvino].")
@click.option("--int8", is_flag=True, help="Also write the INT8 Q/DQ graph (INT8+FP16 for TensorRT); needs --calibration.")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of images (searched recursively) to calibrate --int8 on.")
@click.option("--calibration-count", type=click.IntRange(min=1), default=512,
              help="Images calibrated on, picked reproducibly; up to 64 others are held out for validation.")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              help="How activation ranges are chosen from the calibration outputs.")
@click.option("--int8-layout", type=click.Choice(["tensorrt", "cpu"]), default="tensorrt",
              help="INT8 graph for TensorRT (symmetric, INT8+FP16) or for x86 CPU runtimes (u8s8, FP32 elsewhere).")
@click.option(
    "--simplifier", type=click.Choice(["onnxslim", "onnxsim", "none"]), default="onnxslim",
    help="Graph simplifier; its graph is kept only if no larger and still dynamic.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--json-out", type=click.Path(), default=None,
              help="Also write the report to FILE (written on a failed validation too, unlike report.json).")
def export(
    variant: str, weights: str | None, pretrained: bool, num_classes: int, output_dir: str, exporter: str,
    opset: int | None, fp16: bool, features: bool, openvino: bool, int8: bool, calibration: str | None, calibration_count: int,
    calibration_method: str, int8_layout: str, simplifier: str, as_json: bool, json_out: str | None,
) -> None:
    """Export ConvMLP to ONNX (dynamic batch/height/width), simplify, validate, write.

    Writes convmlp_{v}.onnx (+ .fp16.onnx, .int8.onnx, .features.onnx, .openvino.xml)
    and convmlp_{v}.report.json into --output-dir. Every graph is checked against
    PyTorch on onnxruntime first (each IR on OpenVINO); if any fails (exit 3), no
    existing artifact is replaced.
    """

    from export.pipeline import ExportConfig, run_export

    if weights and pretrained:
        raise click.UsageError("give either --weights or --pretrained, not both")
    if int8 != (calibration is not None):
        raise click.UsageError("--int8 and --calibration DIR go together (INT8 is calibrated on your images)")
    if json_out:
        check_output_file(json_out, "--json-out")
    cfg = ExportConfig(
        variant=variant.lower(), output_dir=Path(output_dir), weights=Path(weights) if weights else None,
        pretrained=pretrained, num_classes=num_classes, exporter=exporter, opset=opset, fp16=fp16, features=features,
        openvino=openvino, simplifier=simplifier, int8=int8, calibration=Path(calibration) if calibration else None,
        calibration_count=calibration_count, calibration_method=calibration_method, int8_layout=int8_layout,
    )
    log = (lambda msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    with user_errors(), count_progress("calibrating", quiet=as_json) as progress:
        cfg.calibration_progress = progress
        result = run_export(cfg, log=log)
        if json_out:
            write_json(json_out, result.report)
    if as_json:
        echo_json(result.report)
    else:
        for g in result.graphs:
            click.echo("")
            echo_validation(g.validation)
        click.echo("")
        width = max(len(g.name) for g in result.graphs)
        for g in result.graphs:
            state = f"{g.size_bytes / 2**20:.1f} MiB" if result.passed else "not written"
            unit = "layers" if g.weights_path else "nodes"
            click.echo(f"{g.name:>{width}}: {g.path} ({g.nodes} {unit}, {state})")
        if result.report_path:
            click.echo(f"  report: {result.report_path}")
        click.echo(f"total {result.timings['total_s']:.1f} s")
    if not result.passed:
        if as_json:
            raise ValidationFailed("validation failed, nothing written: " + "; ".join(result.failures))
        failed = [g.name for g in result.graphs if not g.validation.passed]
        raise ValidationFailed(f"validation failed for the {', '.join(failed)} graph (see above), nothing written")


@main.command()
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False),
              help="ONNX file to check (or an OpenVINO IR .xml from 'export --openvino').")
@click.option("--engine", "engine_path", type=click.Path(exists=True, dir_okay=False), help="TensorRT engine to check.")
@click.option("--variant", "-v", type=VARIANT, default=None, help="Variant (default: from the file's metadata).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None, help="Checkpoint the file was exported from.")
@click.option(
    "--backend", type=click.Choice([n for n, b in BACKENDS.items() if b.reads == "onnx"]), default=None,
    help="Runtime for --onnx [default: onnxruntime; openvino for an IR .xml].",
)
@click.option(
    "--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default=None,
    help="onnxruntime execution provider for --onnx (default: CUDA if present, else CPU).",
)
@click.option(
    "--precision", type=click.Choice(["auto", "f32", "bf16", "fp16"]), default=None,
    help="openvino: inference precision [default: auto, BF16 where the CPU has it]; the gate follows it.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (onnxruntime / openvino).")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of real photographs (up to 64 used) added as a case: top-1 agreement is gated on them.")
@click.option("--per-layer", is_flag=True,
              help="Also compare every intermediate tensor with the FP32 graph and name the first layer whose "
                   "error jumps (onnxruntime, one 224x224 input).")
@click.option("--reference-onnx", type=click.Path(exists=True, dir_okay=False), default=None,
              help="FP32 graph for --per-layer [default: convmlp_{variant}.onnx beside --onnx].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--json-out", type=click.Path(), default=None, help="Also write the JSON report to FILE.")
def validate(
    onnx_path: str | None, engine_path: str | None, variant: str | None, weights: str | None, backend: str | None,
    provider: str | None, precision: str | None, threads: int | None, images: str | None, per_layer: bool,
    reference_onnx: str | None, as_json: bool, json_out: str | None,
) -> None:
    """Check an ONNX graph or a TensorRT engine against PyTorch FP32 (exit 3 if it fails).

    ONNX: batch 1 and 3, 224x224, non-square, 97x131 and 512x512. Engine: each
    profile's min, opt and max plus odd sizes inside. Gates: FP32 relative L2
    error <= 1e-4; FP16 <= 3e-3 and the same top-1 on every sample.
    """
    from deploy.backends import default_backend
    from deploy.ir import is_ir
    from deploy.validate import validate_engine, validate_onnx

    if (onnx_path is None) == (engine_path is None):
        raise click.UsageError("give exactly one of --onnx PATH or --engine PATH")
    if backend and engine_path:
        raise click.UsageError("--backend applies to --onnx (an engine runs on TensorRT)")
    backend = backend or (default_backend("onnx", onnx_path) if onnx_path else None)
    if per_layer and onnx_path and is_ir(onnx_path):
        raise click.UsageError("--per-layer compares ONNX graphs on onnxruntime: give the .onnx this IR came from")
    if provider and engine_path:
        raise click.UsageError("--provider applies to --onnx only")
    if images and engine_path:
        raise click.UsageError("--images applies to --onnx only")
    if (per_layer or reference_onnx) and engine_path:
        raise click.UsageError("--per-layer compares ONNX graphs: use it with --onnx")
    if reference_onnx and not per_layer:
        raise click.UsageError("--reference-onnx goes with --per-layer")
    if json_out:
        check_output_file(json_out, "--json-out")
    if provider and backend != "onnxruntime":
        raise click.UsageError("--provider is an onnxruntime option; drop it or use --backend onnxruntime")
    if precision and backend != "openvino":
        raise click.UsageError("--precision applies to --backend openvino (other backends run the graph's precision)")
    v = variant.lower() if variant else None
    log = (lambda shape: None) if as_json else (lambda shape: click.echo(f"  case {shape}", err=True))
    with user_errors():
        if onnx_path:
            try:
                photos = _photos(images) if images else ()
                report = validate_onnx(onnx_path, variant=v, weights=weights, backend=backend, precision=precision,
                                       threads=threads, providers=[provider] if provider else None, on_case=log,
                                       images=photos)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
        else:
            report = validate_engine(engine_path, variant=v, weights=weights, on_case=log)
        layers = _per_layer(onnx_path, reference_onnx) if per_layer and onnx_path else None
        data = report.to_dict() | ({"per_layer": layers.to_dict()} if layers else {})
        if json_out:
            write_json(json_out, data)
    if as_json:
        echo_json(data)
    else:
        echo_validation(report)
        if layers is not None:
            echo_layers(layers)
    if not report.passed:
        if as_json:  # stdout is JSON: the reasons go to stderr
            raise ValidationFailed("validation failed: " + "; ".join(report.failures))
        raise ValidationFailed(f"validation failed on {sum(not c.passed for c in report.cases)} of "
                               f"{len(report.cases)} cases (the FAILED line above says why)")


def _per_layer(onnx_path: str, reference_onnx: str | None) -> Any:
    """``deploy.layers.compare_layers`` for the checked graph and its FP32 graph, on one image-like input."""
    from deploy.layers import compare_layers, reference_graph
    from deploy.trt.onnx_info import inspect_onnx
    from deploy.validate import sample_images

    info = inspect_onnx(onnx_path)
    ref = reference_onnx or reference_graph(onnx_path, info.metadata)
    return compare_layers(onnx_path, ref, sample_images((1, 3, 224, 224), 0), precision=info.precision)


def _photos(folder: str, limit: int = 64) -> list[Any]:
    """Up to ``limit`` image files under ``folder`` (sorted), or a usage error when there are none."""
    from convmlp.preprocess import list_images

    found = list_images(folder)
    if not found:
        raise click.BadParameter(f"{folder}: no image files in it", param_hint="--images")
    return found[:limit]


# --------------------------------------------------------------------------- triton, predict


@main.command(cls=GreedyCommand)
@click.option("--engine", type=click.Path(exists=True, dir_okay=False), help="TensorRT plan (with its .json sidecar).")
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False),
              help="ONNX graph from 'export', or its OpenVINO IR .xml (served by the OpenVINO backend).")
@click.option(
    "--repository", required=True, type=click.Path(file_okay=False),
    help="Triton model repository folder (created if missing).",
)
@click.option("--model-name", default=None, help="Model folder name [default: convmlp_{variant}[_features]_{trt|onnx}].")
@click.option(
    "--max-batch-size", type=click.IntRange(min=1), default=None,
    help="Triton max_batch_size [default: the engine's largest profile batch; ONNX: 32].",
)
@click.option(
    "--backend", "runtime", type=click.Choice(["tensorrt", "onnxruntime", "openvino"]), default=None,
    help="Triton backend [default: tensorrt for --engine, onnxruntime for --onnx]; openvino serves --onnx on CPUs.",
)
@click.option(
    "--instance-kind", type=click.Choice(["gpu", "cpu"]), default=None,
    help="KIND_GPU or KIND_CPU instances [default: gpu; cpu for --backend openvino].",
)
@click.option("--instances", type=click.IntRange(min=1), default=1, help="Model instances per device (instance_group count).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Class names, one per line: copied beside the config as the logits' label_filename.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="OpenVINO: INFERENCE_NUM_THREADS.")
@click.option("--streams", type=click.IntRange(min=1), default=None, help="OpenVINO: NUM_STREAMS.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, help="Let Triton batch requests together.")
@click.option(
    "--preferred-batch-sizes", type=click.IntRange(min=1), multiple=True,
    help="Preferred batch sizes, several allowed (--preferred-batch-sizes 8 16) [default: engine opt batch + max].",
)
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=100, help="Dynamic batcher queue delay.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--json-out", type=click.Path(), default=None, help="Also write the JSON to FILE.")
def triton(
    engine: str | None,
    onnx_path: str | None,
    repository: str,
    model_name: str | None,
    max_batch_size: int | None,
    runtime: str | None,
    instance_kind: str | None,
    instances: int,
    labels: str | None,
    threads: int | None,
    streams: int | None,
    dynamic_batching: bool,
    preferred_batch_sizes: tuple[int, ...],
    max_queue_delay_us: int,
    as_json: bool,
    json_out: str | None,
) -> None:
    """Write a Triton model repository entry (config.pbtxt + 1/model.plan, 1/model.onnx or 1/model.xml+.bin).

    Names, dtypes, dims and the batch limit are read from the model itself (the
    ONNX graph and its metadata, or the engine's sidecar manifest).
    """
    from deploy.triton import TritonOptionError, read_model_facts, resolve_options, write_model_entry

    if (engine is None) == (onnx_path is None):
        raise click.UsageError("give exactly one of --engine or --onnx")
    if json_out:
        check_output_file(json_out, "--json-out")
    with user_errors():
        facts = read_model_facts(engine=engine, onnx=onnx_path)
        try:
            opts = resolve_options(
                facts, model_name=model_name, max_batch_size=max_batch_size, instances=instances,
                dynamic_batching=dynamic_batching, preferred_batch_sizes=preferred_batch_sizes,
                max_queue_delay_us=max_queue_delay_us, runtime=runtime, instance_kind=instance_kind,
                labels=labels, threads=threads, streams=streams,
            )
            entry = write_model_entry(facts, opts, repository)
        except TritonOptionError as exc:
            raise click.UsageError(str(exc)) from None
        if json_out:
            write_json(json_out, entry.to_dict())
    if as_json:
        echo_json(entry.to_dict())
        return
    served = "backend openvino" if opts.runtime == "openvino" else facts.platform
    click.echo(f"wrote {entry.config_path.parent} ({served}, max_batch_size {opts.max_batch_size})")
    rows = [
        {"io": io, "name": t.name, "data_type": t.data_type, "dims": "[" + ", ".join(map(str, t.dims)) + "]"}
        for io, ts in (("input", facts.inputs), ("output", facts.outputs))
        for t in ts
    ]
    echo_table(rows, [("io", "io"), ("name", "name"), ("data_type", "data type"), ("dims", "dims")])
    batching = (
        f"dynamic, preferred {list(opts.preferred_batch_sizes) or 'any'}" if opts.dynamic_batching else "off"
    )
    click.echo(f"instances: {opts.instances} x KIND_{opts.instance_kind.upper()}; batching: {batching}")


class PredictResolution(Resolution):
    """``Resolution`` plus ``native`` (keep each image's own size)."""

    name = "RES|native"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == "native":
            return "native"
        return super().convert(value, param, ctx)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--engine", type=click.Path(exists=True, dir_okay=False), help="TensorRT plan (with its .json sidecar).")
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False),
              help="ONNX classifier graph, or its OpenVINO IR .xml.")
@click.option("--variant", "-v", type=VARIANT, default=None, help="PyTorch ConvMLP variant.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint for --variant.")
@click.option("--pretrained", is_flag=True, help="Official ImageNet-1k weights for --variant (downloads).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="Device for --variant.")
@click.option("--backend", type=click.Choice(list(BACKEND_NAMES)), default=None,
              help="Runtime [default: onnxruntime for --onnx, tensorrt for --engine, torch for --variant].")
@click.option("--precision", type=click.Choice(["auto", "f32", "bf16", "fp16"]), default=None,
              help="--backend openvino: inference precision [default: auto].")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=5, help="Classes to show per image.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="Class names, one per line.")
@click.option(
    "--resolution", "-r", type=PredictResolution(), default=None,
    help="224, HxW or native (each image's own size) [default: the weights config's 224 crop].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--json-out", type=click.Path(), default=None, help="Also write the JSON to FILE.")
def predict(
    images: tuple[str, ...],
    engine: str | None,
    onnx_path: str | None,
    variant: str | None,
    weights: str | None,
    pretrained: bool,
    device: str,
    backend: str | None,
    precision: str | None,
    top_k: int,
    labels: str | None,
    resolution: Any,
    as_json: bool,
    json_out: str | None,
) -> None:
    """Top-k classes of each IMAGE with softmax probabilities.

    Any backend: --engine (TensorRT), --onnx (onnxruntime) or --variant (PyTorch).
    Images and options may come in any order. An image that cannot be read is
    reported on stderr and the others are still answered; the exit code is then 1.
    """
    from deploy.predict import load_labels, open_classifier, predict_images

    if sum(x is not None for x in (engine, onnx_path, variant)) != 1:
        raise click.UsageError("give exactly one of --engine, --onnx or --variant")
    if json_out:
        check_output_file(json_out, "--json-out")
    if (weights or pretrained) and variant is None:
        raise click.UsageError("--weights and --pretrained go with --variant")
    if weights and pretrained:
        raise click.UsageError("give --weights or --pretrained, not both")
    from deploy.backends import RunnerOptions

    with user_errors():
        try:
            info = open_classifier(
                engine=engine, onnx=onnx_path, variant=variant, weights=weights, pretrained=pretrained,
                device=device, backend=backend, options=RunnerOptions(precision=precision),
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        names = None
        if labels is not None:
            from deploy.errors import DeployError

            try:
                names = load_labels(labels, info.num_classes)
            except DeployError as exc:
                raise click.BadParameter(str(exc), param_hint="--labels") from None
        if isinstance(resolution, tuple):
            from deploy.resources import check_fits

            check_fits(info.variant, [(1, *resolution)], device=info.runner.device)
        for note in info.notes:
            click.echo(f"Note: {note}", err=True)
        results = []
        with info.runner:
            for res in predict_images(info, images, k=top_k, labels=names, resolution=resolution):
                results.append(res)
                if not res.ok:
                    click.echo(f"Error: {res.error}", err=True)
                elif not as_json:
                    shape = "x".join(map(str, res.input_shape or ()))
                    click.echo(f"{res.image}  [{shape}]")
                    cols = [("rank", "rank"), ("index", "class")]
                    cols += [("label", "label")] if names else []
                    echo_table([s.to_dict() for s in res.top], cols + [("probability", "probability")])
                    click.echo("")
    data = {"model": info.to_dict(), "results": [r.to_dict() for r in results]}
    if json_out:
        write_json(json_out, data)
    if as_json:
        echo_json(data)
    failed = sum(not r.ok for r in results)
    if failed:
        raise click.ClickException(f"{failed} of {len(results)} images could not be classified")


@main.command(cls=GreedyCommand)
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Labelled images: one folder per class (ImageFolder), or any layout with --labels-file.")
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Lines 'relative/path label_index' (paths relative to --data), as ImageNet val lists.")
@click.option("--variant", "-v", type=VARIANT, default=None, help="PyTorch ConvMLP variant (the reference row).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint for --variant.")
@click.option("--pretrained", is_flag=True, help="Official ImageNet-1k weights for --variant (downloads).")
@click.option("--onnx", "onnx_paths", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="ONNX graph(s) from 'export' (FP32, FP16, INT8...) or OpenVINO IR .xml; several allowed.")
@click.option("--onnx-backend", "onnx_backends", type=click.Choice([n for n, b in BACKENDS.items() if b.reads == "onnx"]),
              multiple=True,
              help="Runtime(s) for each --onnx [default: onnxruntime; openvino for an IR]; several give a row each.")
@click.option("--engine", "engine_paths", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="TensorRT engine(s) (with their .json sidecars); several allowed.")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=32, help="Images per inference.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N images.")
@click.option("--resolution", "-r", type=RESOLUTION, default=None,
              help="Input size (224 or HxW) [default: the model's 224 crop].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout instead of the table.")
@click.option("--json-out", type=click.Path(dir_okay=False, writable=True), default=None, help="Also write JSON to FILE.")
def evaluate(
    data: str, labels_file: str | None, variant: str | None, weights: str | None, pretrained: bool,
    onnx_paths: tuple[str, ...], onnx_backends: tuple[str, ...], engine_paths: tuple[str, ...], batch: int,
    limit: int | None, resolution: tuple[int, int] | None, as_json: bool, json_out: str | None,
) -> None:
    """Top-1/top-5 accuracy on a labelled image set, every backend side by side on the same images.

    Rows: --variant (PyTorch FP32, the reference: accuracy difference and image-by-image
    top-1 agreement are against it), each --onnx on each --onnx-backend, each --engine.
    Unreadable images are skipped and named. Exit 2 for an unusable data set (empty,
    no class folders, bad list line, label beyond the model's classes); exit 1 when no
    image can be read.
    """
    from contextlib import ExitStack

    from deploy.backends import RunnerOptions, default_backend
    from deploy.evaluate import DatasetError, load_dataset
    from deploy.evaluate import evaluate as run_evaluate
    from deploy.predict import open_classifier

    if variant is None and not onnx_paths and not engine_paths:
        raise click.UsageError("nothing to evaluate: give --variant, --onnx PATH or --engine PATH")
    if (weights or pretrained) and variant is None:
        raise click.UsageError("--weights and --pretrained go with --variant")
    if weights and pretrained:
        raise click.UsageError("give --weights or --pretrained, not both")
    if onnx_backends and not onnx_paths:
        raise click.UsageError("--onnx-backend goes with --onnx")
    if json_out:
        check_output_file(json_out, "--json-out")
    with user_errors():
        try:
            dataset = load_dataset(data, labels_file)
        except DatasetError as exc:
            raise click.UsageError(str(exc)) from None
        if resolution is not None:
            from deploy.resources import check_fits

            check_fits(variant, [(batch, *resolution)])
        with ExitStack() as stack:
            models = []
            try:
                if variant is not None:
                    models.append(open_classifier(variant=variant, weights=weights, pretrained=pretrained))
                for path in onnx_paths:
                    for b in onnx_backends or (default_backend("onnx", path),):
                        models.append(open_classifier(onnx=path, backend=b, options=RunnerOptions()))
                for path in engine_paths:
                    models.append(open_classifier(engine=path))
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            for m in models:
                stack.enter_context(m.runner)
                for note in m.notes:
                    click.echo(f"Note: {note}", err=True)
            with count_progress("evaluating", quiet=as_json) as progress:
                try:
                    report = run_evaluate(models, dataset, batch=batch, limit=limit, resolution=resolution,
                                          progress=progress)
                except DatasetError as exc:
                    raise click.UsageError(str(exc)) from None
        if json_out:
            write_json(json_out, report.to_dict())
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(f"{report.images} images from {report.dataset} ({report.form}), {len(report.skipped)} skipped")
    rows = report.rows()
    for r in rows:
        for k in ("top1", "top5", "agreement"):
            if r[k] is not None:
                r[k] = f"{100 * r[k]:.2f}%"
    echo_table(rows, EVAL_COLUMNS)
    for line in report.skipped:
        click.echo(f"skipped {line}", err=True)
    if json_out:
        click.echo(f"wrote {json_out}")


# --------------------------------------------------------------------------- build / doctor (TensorRT)


class ShapeParam(click.ParamType):
    """An NCHW shape ``NxCxHxW`` (``8x3x224x224``)."""

    name = "NxCxHxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from deploy.trt.profiles import parse_shape

        if isinstance(value, tuple):
            return value
        try:
            return parse_shape(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ProfileParam(click.ParamType):
    """A shape profile ``MIN:OPT:MAX`` (``1x3x128x128:8x3x224x224:32x3x512x512``)."""

    name = "MIN:OPT:MAX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from deploy.trt.profiles import ShapeProfile

        if isinstance(value, ShapeProfile):
            return value
        try:
            return ShapeProfile.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@main.command(cls=GreedyCommand)
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="ONNX graph from 'export' (.fp16.onnx gives an FP16 engine, .int8.onnx an INT8+FP16 one).")
@click.option("--min-shape", type=ShapeParam(), help="Smallest input NxCxHxW (with --opt-shape and --max-shape).")
@click.option("--opt-shape", type=ShapeParam(), help="Input shape TensorRT tunes for.")
@click.option("--max-shape", type=ShapeParam(), help="Largest input.")
@click.option("--profile", "profile_", type=ProfileParam(), multiple=True,
              help="Optimization profile MIN:OPT:MAX; repeat (or list several) for several profiles. "
                   "Default: 1x3x128x128:8x3x224x224:32x3x512x512.")
@click.option("--workspace-gib", type=click.FloatRange(min=0, min_open=True), default=4.0,
              help="Builder workspace memory limit (GiB).")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, help="Builder optimization level (0-5).")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="Timing cache file: read if present, written after the build (faster rebuilds).")
@click.option("--hardware-compat", type=click.Choice(["ampere+", "same-cc"]), default=None,
              help="Build an engine that also runs on other GPUs (Ampere and newer / same compute capability).")
@click.option("--version-compatible", is_flag=True, help="Engine also loads in later TensorRT versions.")
@click.option("--weak-fp16", is_flag=True, hidden=True,
              help="TensorRT 10 only, deprecated: FP32 graph with BuilderFlag.FP16.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Engine path [default: the ONNX path with .engine].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a summary.")
@click.option("--json-out", type=click.Path(), default=None, help="Also write the JSON to FILE.")
def build(
    onnx_path: str,
    min_shape: tuple[int, ...] | None,
    opt_shape: tuple[int, ...] | None,
    max_shape: tuple[int, ...] | None,
    profile_: tuple[Any, ...],
    workspace_gib: float,
    opt_level: int,
    timing_cache: str | None,
    hardware_compat: str | None,
    version_compatible: bool,
    weak_fp16: bool,
    output: str | None,
    as_json: bool,
    json_out: str | None,
) -> None:
    """Build a TensorRT engine (plan + .json sidecar) from an exported ONNX graph.

    The network is strongly typed: precision comes from the graph. Engines run
    only on the GPU model and TensorRT version that built them, unless built
    with --hardware-compat / --version-compatible.
    """

    from deploy.ir import is_ir
    from deploy.trt.builder import BuildOptions, build_engine
    from deploy.trt.profiles import DEFAULT_PROFILE, ShapeProfile

    shapes = (min_shape, opt_shape, max_shape)
    if profile_ and any(s is not None for s in shapes):
        raise click.UsageError("use either --profile or --min-shape/--opt-shape/--max-shape, not both")
    if any(s is not None for s in shapes):
        if any(s is None for s in shapes):
            raise click.UsageError("--min-shape, --opt-shape and --max-shape go together: give all three")
        try:
            profiles = [ShapeProfile(*shapes)]  # type: ignore[arg-type]
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        profiles = list(profile_) or [DEFAULT_PROFILE]
    options = BuildOptions(
        workspace_gib=workspace_gib,
        opt_level=opt_level,
        timing_cache=Path(timing_cache) if timing_cache else None,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        weak_fp16=weak_fp16,
    )
    if is_ir(onnx_path):
        raise click.UsageError("build takes an ONNX graph; an OpenVINO IR (.xml) runs on OpenVINO only")
    if json_out:
        check_output_file(json_out, "--json-out")
    with user_errors():
        result = build_engine(onnx_path, profiles, options, output)
        if json_out:
            write_json(json_out, result.to_dict())
    if as_json:
        echo_json(result.to_dict())
        return
    m = result.manifest
    click.echo(f"built {result.engine_path} ({result.engine_bytes / 1e6:.1f} MB) in {result.build_seconds:.1f} s")
    click.echo(f"  {m.precision} {m.kind} convmlp_{m.variant or '?'}, TensorRT {m.tensorrt_version}, "
               f"{m.gpu_name} (sm {m.compute_capability})")
    click.echo(f"  manifest: {result.manifest_path}")
    echo_table(
        [{"profile": i, "min": p.min, "opt": p.opt, "max": p.max} for i, p in enumerate(m.profiles)],
        [("profile", "profile"), ("min", "min"), ("opt", "opt"), ("max", "max")],
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--json-out", type=click.Path(), default=None, help="Also write the JSON to FILE.")
def doctor(as_json: bool, json_out: str | None) -> None:
    """What this machine has (GPU, CUDA, onnxruntime, TensorRT...) and which commands can run."""
    from deploy.doctor import collect, command_rows, component_rows

    if json_out:
        check_output_file(json_out, "--json-out")
    report = collect()
    if json_out:
        with user_errors():
            write_json(json_out, report)
    if as_json:
        echo_json(report)
        return
    echo_table(component_rows(report), [("component", "component"), ("status", "status")])
    click.echo()
    echo_table(command_rows(report), [("command", "command"), ("ok", "ok"), ("note", "note")])


def _parse_percentiles(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    from deploy.bench.stats import parse_percentiles

    try:
        return parse_percentiles(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@main.command(cls=GreedyCommand)
@click.option("--variant", "-v", type=VARIANT, help="Variant: the model for torch; with --onnx/--engine, for GMACs.")
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False),
              help="ONNX file (implies onnxruntime), or OpenVINO IR .xml (implies openvino).")
@click.option("--engine", type=click.Path(exists=True, dir_okay=False), help="TensorRT engine (implies tensorrt).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Checkpoint for torch (default: synthetic).")
@click.option(
    "--backend", type=click.Choice(list(BACKEND_NAMES)), default=None,
    help="Runtime; inferred from --onnx (onnxruntime; openvino for .xml) / --engine / --variant when omitted.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default cpu (cuda for --engine).")
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "bf16", "f32", "auto"]), default=None,
    help="torch: fp32 (default) or fp16 on cuda; openvino: auto (default: BF16 where the CPU has it), "
         "f32, bf16, fp16. Files run on other backends carry their precision.",
)
@click.option("--batch", "-b", type=click.IntRange(min=1), multiple=True, default=(1,), help="Batch size(s).")
@click.option(
    "--resolution", "-r", type=RESOLUTION, multiple=True, default=("224",),
    help="Input size(s): 224 or HxW; several make a sweep (--resolution 224 512 320x640).",
)
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=200.0, help="Warm-up time per case.")
@click.option(
    "--duration-s", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Time per case (at least 10 iterations) [default: 3].",
)
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Exact iterations per case instead.")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the PyTorch model.")
@click.option("--cuda-graph", is_flag=True, help="TensorRT: launch through a captured CUDA graph.")
@click.option("--streams", type=click.IntRange(min=1), default=1,
              help="Queries in flight: TensorRT execution contexts, OpenVINO NUM_STREAMS.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (torch / onnxruntime / openvino).")
@click.option("--percentiles", default="90,95,99", callback=_parse_percentiles, help="Latency percentiles.")
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Device peak TFLOP/s: adds the fraction of peak achieved.")
@click.option("--per-layer", is_flag=True,
              help="Also time every layer on the first case (onnxruntime profiler / TensorRT IProfiler).")
@click.option("--json", "json_flag", is_flag=False, flag_value="-", default=None, metavar="",
              help="Print the report as JSON to stdout (nothing else). '--json FILE' still works but is deprecated: "
                   "use --json-out FILE.")
@click.option("--json-out", type=click.Path(), default=None, help="Also write the JSON report to FILE.")
@click.option("--csv", "csv_out", type=click.Path(), default=None, help="Write one CSV row per case.")
@click.option("--plot", "plot_out", type=click.Path(), default=None,
              help="Image (png, pdf, svg...) of latency and throughput per resolution (needs matplotlib).")
def benchmark(
    variant: str | None, onnx: str | None, engine: str | None, weights: str | None, backend: str | None,
    device: str | None, precision: str | None, batch: tuple[int, ...], resolution: tuple[tuple[int, int], ...],
    warmup_ms: float, duration_s: float | None, iterations: int | None, use_compile: bool, cuda_graph: bool,
    streams: int, threads: int | None, percentiles: tuple[float, ...], peak_tflops: float | None,
    per_layer: bool, json_flag: str | None, json_out: str | None, csv_out: str | None, plot_out: str | None,
) -> None:
    """Time PyTorch, onnxruntime or a TensorRT engine like trtexec, over batches x resolutions.

    Prints throughput, latency percentiles, CV, GMACs and TFLOP/s per case (and on
    CUDA the H2D / compute / D2H / enqueue split), with trtexec's warnings.
    A missing runtime or CUDA device is exit 1; contradicting options and shapes
    outside an engine's profiles are exit 2. Full guide: docs/benchmark.md.
    """
    from deploy.bench import (
        BenchUsageError,
        TimingConfig,
        expand_sweep,
        plot_available,
        prepare,
        resolve_target,
        run_benchmark,
    )

    if duration_s is not None and iterations is not None:
        raise click.UsageError("give either --duration-s or --iterations, not both")
    if json_flag not in (None, "-"):  # the old '--json FILE'
        click.echo("Note: '--json FILE' is deprecated: use --json-out FILE (--json alone prints to stdout)", err=True)
        if json_out is not None:
            raise click.UsageError("give --json-out FILE once (not also the deprecated --json FILE)")
        json_out, json_flag = json_flag, None
    quiet = json_flag == "-"
    for option, path, formats in (("--json-out", json_out, None), ("--csv", csv_out, None),
                                  ("--plot", plot_out, PLOT_FORMATS)):
        if path is not None:
            check_output_file(path, option, formats=formats)
    try:
        target = resolve_target(
            variant=variant, backend=backend, onnx=onnx, engine=engine, device=device, precision=precision,
            weights=weights, compile=use_compile, cuda_graph=cuda_graph, streams=streams, threads=threads,
        )
        cases = expand_sweep(batch, resolution)
        timing = TimingConfig(
            warmup_s=warmup_ms / 1e3, duration_s=duration_s if duration_s is not None else 3.0, iterations=iterations
        )
        if plot_out and not plot_available():
            raise click.ClickException("--plot needs matplotlib: pip install 'convmlp-deploy[plot]'")
        with user_errors():
            target = prepare(target, cases)
        if per_layer and target.backend not in ("onnxruntime", "tensorrt"):
            raise BenchUsageError(f"--per-layer times layers on onnxruntime and tensorrt, not on {target.backend}")
        if per_layer and cuda_graph:
            raise BenchUsageError("--per-layer times plain enqueues: drop --cuda-graph")
    except (BenchUsageError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None

    def show(result: Any) -> None:
        if not quiet:
            click.echo("\n".join(result.summary_block()) + "\n")

    with user_errors(), bench_progress(len(cases), timing.estimated_s, quiet) as progress:
        report = run_benchmark(target, cases, timing, percentiles=percentiles, peak_tflops=peak_tflops,
                               progress=progress, on_result=show)

    layers = None
    if per_layer:
        from deploy.bench import profile_layers

        if not quiet:
            click.echo(f"per-layer profile of {cases[0].label} ...", err=True)
        with user_errors():
            layers = profile_layers(target, cases[0])

    from deploy.bench import plot_report, write_text

    def as_json() -> str:
        data = report.to_dict() | ({"per_layer": layers.to_dict()} if layers else {})
        return json.dumps(data, indent=2) + "\n"

    written: list[str] = []
    with user_errors():
        if json_out:
            written.append(str(write_text(json_out, as_json())))
        if csv_out:
            written.append(str(write_text(csv_out, report.to_csv())))
        if plot_out:
            written.append(str(plot_report(report, plot_out)))
    if quiet:
        click.echo(as_json(), nl=False)
        return
    from deploy.bench.report import machine_line

    click.echo(machine_line(report.machine, report.versions))
    echo_table(report.rows(), report.columns())
    for r in report.results:
        for w in r.warnings:
            click.echo(f"warning: b{r.batch} {r.height}x{r.width}: {w.message}")
    if layers is not None:
        echo_layer_times(layers)
    for path in written:
        click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
