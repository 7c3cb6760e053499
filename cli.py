"""convmlp-deploy: export, build, validate, benchmark and serve ConvMLP.

Each command parses its options (groups from ``deploy.cli.options``), makes one library call and
presents the result (``deploy.cli.present``). Errors map to exit codes once, in ``deploy.cli.options.Group``:
0 ok, 1 runtime failure, 2 usage error, 3 validation failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from convmlp import __version__
from deploy.cli.config_option import config_option, no_model_given, refuse_with_config
from deploy.cli.export_options import export_options
from deploy.cli.options import (
    PERCENTILES,
    PROFILE,
    RESOLUTION,
    SHAPE,
    GreedyCommand,
    Group,
    JsonOut,
    OutputFile,
    PredictResolution,
    Runtime,
    ValidationFailed,
    endpoint_options,
    json_output,
    model_source,
    runtime_options,
    shape_options,
    stream_options,
)
from deploy.cli.present import PLOT_FORMATS, count_progress, echo_notes
from deploy.loader import ModelSource

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}

resolutions_option = click.option(
    "--resolution", "-r", type=RESOLUTION, multiple=True, default=("224",),
    help="Input size(s): 224 or HxW; several allowed (--resolution 224 512 320x640).",
)


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="convmlp-deploy")
def main() -> None:
    """Deploy ConvMLP (S/M/L): export to ONNX, build FP16 TensorRT engines,
    validate against PyTorch, benchmark and serve.

    Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 validation failed.
    """


@main.command(cls=GreedyCommand)
@model_source(variant="required", files=(), weights=None)
@resolutions_option
@click.option("--features", is_flag=True, help="Profile the F1..F4 backbone (no head).")
@json_output()
def profile(source: ModelSource, resolution: tuple[tuple[int, int], ...], features: bool, out: JsonOut) -> None:
    """Parameters and GMACs (multiply-accumulates) at each resolution, batch 1."""
    from convmlp.profile import profile_variant
    from deploy.cli.present import echo_profile

    results = [p.to_dict() for p in profile_variant(source.variant, list(resolution), features_only=features)]
    if not out.emit(results[0] if len(results) == 1 else results):
        echo_profile(results)


@main.command()
@model_source(variant="required", files=(), weights="variant", pretrained=True)
@export_options()
@json_output()
def export(source: ModelSource, options: dict[str, Any], out: JsonOut) -> None:
    """Export ConvMLP to ONNX (dynamic batch/height/width), simplify, validate, write.

    Writes convmlp_{v}.onnx (+ .fp16.onnx, .int8.onnx, .features.onnx, .openvino.xml)
    and convmlp_{v}.report.json into --output-dir. Every graph is checked against
    PyTorch on onnxruntime first (each IR on OpenVINO); if any fails (exit 3), no
    existing artifact is replaced, the failed graph is kept in --output-dir/rejected/
    (removed by the next export) and the layer where its error first jumps is named.
    --json-out also keeps the report of a failed run. Ctrl-C (SIGINT) and SIGTERM
    clean up and exit 130 / 143.
    """
    from deploy.cli.present import echo_export, export_failure
    from export.errors import Interrupted
    from export.pipeline import ExportConfig, run_export

    cfg = ExportConfig(variant=source.variant or "", weights=source.weights, pretrained=source.pretrained, **options)
    try:
        with count_progress("calibrating", quiet=out.printing) as progress:
            cfg.calibration_progress = progress
            result = run_export(cfg, log=(lambda msg: None) if out.printing else (lambda msg: click.echo(msg, err=True)))
    except Interrupted as exc:
        click.echo(f"Aborted! ({exc.signal_name}: the export stopped and removed its staged files)", err=True)
        raise
    if not out.emit(result.report):
        echo_export(result)
    if not result.passed:
        raise ValidationFailed(export_failure(result, out.printing))


@main.command()
@model_source(variant="hint", weights="reference", file_required=False)
@endpoint_options()
@runtime_options(reads=("onnx",), backend_help="Runtime for --onnx [default: onnxruntime; openvino for an IR .xml].")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default=None,
              help="onnxruntime execution provider for --onnx (default: CUDA if present, else CPU).")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of real photographs (up to 64 used) added as a case: top-1 agreement is gated on them.")
@click.option("--per-layer", is_flag=True,
              help="Also compare every intermediate tensor with the FP32 graph and name the first layer whose "
                   "error jumps (onnxruntime, one 224x224 input).")
@click.option("--reference-onnx", type=click.Path(exists=True, dir_okay=False), default=None,
              help="FP32 graph for --per-layer [default: convmlp_{variant}.onnx beside --onnx].")
@json_output()
def validate(source: ModelSource, endpoint: Any, runtime: Runtime, provider: str | None, images: str | None,
             per_layer: bool, reference_onnx: str | None, out: JsonOut) -> None:
    """Check an ONNX graph, OpenVINO IR, TensorRT engine or served model against PyTorch FP32 (exit 3 if it fails).

    ONNX: batch 1 and 3, 224x224, non-square, 97x131 and 512x512. Engine: each profile's min, opt and
    max plus odd sizes inside. The gate is the least exact precision the run computes in (the file's,
    read or inferred, and OpenVINO's run-time one): rel L2 <= 1e-4 (fp32), 3e-3 and the same top-1
    (fp16), 0.03 and cosine >= 0.999 (bf16), 0.1 and cosine >= 0.995 (int8); on --images also a top-1
    agreement of 75% (bf16) or 60% (int8). Facts the file does not record are named on stderr.
    --endpoint HOST:PORT --model-name NAME sends the grid to a running KServe-v2 server instead
    (serve, or Triton serving a 'triton' repository); --precision then names the served precision.
    """
    from deploy.cli.present import echo_layers, echo_validation, validation_failure
    from deploy.commands.validate import validate_file

    options = runtime.options.with_(providers=[provider] if provider else None)
    log = (lambda shape: None) if out.printing else (lambda shape: click.echo(f"  case {shape}", err=True))
    run = validate_file(source, backend_name=runtime.backend, options=options, images=images or (),
                        per_layer=per_layer, reference_onnx=reference_onnx, on_case=log, endpoint=endpoint)
    echo_notes(run.notes)
    if not out.emit(run.to_dict()):
        echo_validation(run.report)
        if run.layers is not None:
            echo_layers(run.layers)
    if not run.report.passed:
        raise ValidationFailed(validation_failure(run.report, out.printing))


@main.command(cls=GreedyCommand)
@model_source(variant=None, files=("onnx",), weights=None,
              file_help={"onnx": "ONNX graph from 'export' (.fp16.onnx gives an FP16 engine, .int8.onnx an INT8+FP16 one)."})
@click.option("--min-shape", type=SHAPE, help="Smallest input NxCxHxW (with --opt-shape and --max-shape).")
@click.option("--opt-shape", type=SHAPE, help="Input shape TensorRT tunes for.")
@click.option("--max-shape", type=SHAPE, help="Largest input.")
@click.option("--profile", "profile_", type=PROFILE, multiple=True,
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
@click.option("--weak-fp16", is_flag=True, hidden=True, help="TensorRT 10 only, deprecated: FP32 graph with BuilderFlag.FP16.")
@click.option("--output", "-o", type=OutputFile(), default=None, help="Engine path [default: the ONNX path with .engine].")
@json_output()
def build(source: ModelSource, min_shape: Any, opt_shape: Any, max_shape: Any, profile_: tuple[Any, ...],
          workspace_gib: float, opt_level: int, timing_cache: str | None, hardware_compat: str | None,
          version_compatible: bool, weak_fp16: bool, output: str | None, out: JsonOut) -> None:
    """Build a TensorRT engine (plan + .json sidecar) from an exported ONNX graph.

    The network is strongly typed: precision comes from the graph. Engines run
    only on the GPU model and TensorRT version that built them, unless built
    with --hardware-compat / --version-compatible.
    """
    from deploy.cli.present import echo_build
    from deploy.modelfile.profiles import profiles_from_options
    from deploy.trt.builder import BuildOptions, build_engine

    options = BuildOptions(workspace_gib=workspace_gib, opt_level=opt_level,
                           timing_cache=Path(timing_cache) if timing_cache else None, hardware_compat=hardware_compat,
                           version_compatible=version_compatible, weak_fp16=weak_fp16)
    result = build_engine(source.onnx, profiles_from_options(profile_, (min_shape, opt_shape, max_shape)),
                          options, output)
    if not out.emit(result.to_dict()):
        echo_build(result)


@main.command()
@json_output()
def doctor(out: JsonOut) -> None:
    """What this machine has (GPU, CUDA, onnxruntime, TensorRT, OpenVINO...) and which commands can run."""
    from deploy.cli.present import echo_doctor
    from deploy.commands.doctor import collect

    report = collect()
    if not out.emit(report):
        echo_doctor(report)


@main.command(cls=GreedyCommand)
@model_source(variant="or-hint", weights="variant", file_required=False)
@config_option("re-measure, on the workload it was tuned on and the way tune timed it,")
@endpoint_options(concurrency=True)
@runtime_options(streams=True, device=True)
@shape_options(default="static")
@click.option("--batch", "-b", type=click.IntRange(min=1), multiple=True, default=(1,), help="Batch size(s).")
@resolutions_option
@stream_options(excludes=("resolution", "duration_s", "iterations", "percentiles", "peak_tflops", "per_layer",
                          "plot_out", "concurrency"))
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=200.0, help="Warm-up time per case.")
@click.option("--duration-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time per case (at least 10 iterations) [default: 3].")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Exact iterations per case instead.")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the PyTorch model.")
@click.option("--cuda-graph", is_flag=True, help="TensorRT: launch through a captured CUDA graph.")
@click.option("--percentiles", type=PERCENTILES, default="90,95,99", help="Latency percentiles.")
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Device peak TFLOP/s: adds the fraction of peak achieved.")
@click.option("--per-layer", is_flag=True,
              help="Also time every layer on the first case (onnxruntime profiler / TensorRT IProfiler).")
@click.option("--csv", "csv_out", type=OutputFile(), default=None, help="Write one CSV row per case.")
@click.option("--plot", "plot_out", type=OutputFile(PLOT_FORMATS), default=None,
              help="Image (png, pdf, svg...) of latency and throughput per resolution (needs matplotlib).")
@json_output(legacy_file=True)
def benchmark(source: ModelSource, config: str | None, endpoint: Any, concurrency: tuple[int, ...], runtime: Runtime,
              batch: tuple[int, ...], resolution: tuple[tuple[int, int], ...],
              warmup_ms: float, duration_s: float | None, iterations: int | None, use_compile: bool, cuda_graph: bool,
              percentiles: tuple[float, ...], peak_tflops: float | None, per_layer: bool, csv_out: str | None,
              plot_out: str | None, stream: Any, out: JsonOut) -> None:
    """Time PyTorch, onnxruntime, OpenVINO or a TensorRT engine like trtexec, over batches x resolutions.

    Prints throughput, latency percentiles, CV, GMACs and TFLOP/s per case (and on
    CUDA the H2D / compute / D2H / enqueue split), with trtexec's warnings.
    A missing runtime or CUDA device is exit 1; contradicting options and shapes
    outside an engine's profiles are exit 2. --endpoint HOST:PORT --model-name NAME
    --concurrency 1 2 4 8 measures a served model under concurrent clients instead
    (perf_analyzer-like: throughput, p50/p90/p99; shapes in turn from --batch x --resolution).
    --shapes random:64-512 / cycle:224,320x480 or --shapes-file F measures a stream of sizes
    instead, beside an interleaved --reference-size (also with --endpoint).
    Full guide: docs/benchmark.md.
    """
    from deploy.cli.present import bench_progress, echo_benchmark
    from deploy.commands.bench import TimingConfig, plan_benchmark, plot_report, run_plan, write_text

    if config is not None:  # --config: the tuned deployment, timed again as tune timed it
        from deploy.cli.present import echo_remeasured
        from deploy.commands.tune.remeasure import remeasure
        from deploy.deployconfig import load_config

        refuse_with_config(("onnx", "engine", "variant", "weights", "pretrained", "endpoint", "backend", "precision",
                            "threads", "streams", "device", "batch", "resolution", "shapes", "shapes_file",
                            "shape_policy", "warmup_sizes", "max_specialized", "specialize_after", "cache_size",
                            "compile", "cuda_graph", "per_layer", "iterations", "duration_s"))
        check = load_config(config)
        echo_notes(list(check.warnings))
        result = remeasure(check.config)
        if not out.emit(result.to_dict()):
            echo_remeasured(result)
        return
    if duration_s is not None and iterations is not None:
        raise click.UsageError("give either --duration-s or --iterations, not both")
    if stream is not None:
        from deploy.cli.present import echo_stream
        from deploy.commands.bench.stream import plan_stream, run_stream

        splan = plan_stream(source, stream, endpoint=endpoint, warmup_s=warmup_ms / 1e3, backend=runtime.backend,
                            options=runtime.options, device=runtime.device, compile=use_compile, cuda_graph=cuda_graph)
        with count_progress("stream", quiet=out.printing) as progress:
            sreport = run_stream(splan, progress=progress)
        written = [str(write_text(csv_out, sreport.to_csv()))] if csv_out else []
        if not out.emit(sreport.to_dict()):
            echo_stream(sreport, ([out.path] if out.path else []) + written)
        return
    if endpoint is not None:
        from deploy.cli.present import echo_endpoint_report, endpoint_block
        from deploy.commands.bench.endpoint import run_concurrency

        report = run_concurrency(endpoint, [(b, 3, h, w) for b in batch for h, w in resolution], concurrency or (1, 2, 4, 8),
                                 duration_s=3.0 if duration_s is None else duration_s, warmup_s=warmup_ms / 1e3,
                                 on_result=None if out.printing else endpoint_block)
        written = echo_endpoint_report(report, csv_out, plot_out, quiet=out.printing)
        if not out.emit(report.to_dict()):
            for path in ([out.path] if out.path else []) + written:
                click.echo(f"wrote {path}")
        return
    timing = TimingConfig(warmup_s=warmup_ms / 1e3, duration_s=3.0 if duration_s is None else duration_s,
                          iterations=iterations)
    given = click.get_current_context().get_parameter_source("resolution") != click.core.ParameterSource.DEFAULT
    plan = plan_benchmark(source, backend=runtime.backend, options=runtime.options, device=runtime.device,
                          batches=batch, resolutions=resolution if given else None, timing=timing, compile=use_compile,
                          cuda_graph=cuda_graph, percentiles=percentiles,
                          peak_tflops=peak_tflops, per_layer=per_layer, plot=plot_out is not None)

    def show(result: Any) -> None:
        if not out.printing:
            click.echo("\n".join(result.summary_block()) + "\n")

    with bench_progress(len(plan.cases), timing.estimated_s, out.printing) as progress:
        run = run_plan(plan, progress=progress, on_result=show,
                       on_status=None if out.printing else (lambda msg: click.echo(msg, err=True)))
    written = [str(write_text(csv_out, run.report.to_csv()))] if csv_out else []
    written += [str(plot_report(run.report, plot_out))] if plot_out else []
    if not out.emit(run.to_dict()):
        echo_benchmark(run, ([out.path] if out.path else []) + written)


@main.command(cls=GreedyCommand)
@model_source(variant=None, weights=None, file_required=False,
              file_help={"onnx": "ONNX graph from 'export', or its OpenVINO IR .xml (served by the OpenVINO backend)."})
@config_option("the entry serves")
@runtime_options(reads=("onnx", "engine"), streams=True,
                 backend_help="Triton backend [default: tensorrt for --engine, onnxruntime for --onnx, openvino for "
                              "an IR]; openvino serves --onnx on CPUs (with --threads, --streams, --precision bf16 as "
                              "its parameters).")
@click.option("--repository", required=True, type=click.Path(file_okay=False),
              help="Triton model repository folder (created if missing).")
@click.option("--model-name", default=None, help="Model folder name [default: convmlp_{variant}[_features]_{trt|onnx}].")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None,
              help="Triton max_batch_size [default: the engine's largest profile batch; ONNX: 32].")
@click.option("--instance-kind", type=click.Choice(["gpu", "cpu"]), default=None,
              help="KIND_GPU or KIND_CPU instances [default: gpu; cpu for --backend openvino].")
@click.option("--instances", type=click.IntRange(min=1), default=1, help="Model instances per device (instance_group count).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Class names, one per line: copied beside the config as the logits' label_filename.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, help="Let Triton batch requests together.")
@click.option("--preferred-batch-sizes", type=click.IntRange(min=1), multiple=True,
              help="Preferred batch sizes, several allowed (--preferred-batch-sizes 8 16) [default: engine opt batch + max].")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=100, help="Dynamic batcher queue delay.")
@click.option("--overwrite", is_flag=True, help="Replace an entry of that name that serves another file or precision.")
@json_output()
def triton(source: ModelSource, config: str | None, runtime: Runtime, repository: str, out: JsonOut,
           **serving: Any) -> None:
    """Write a Triton model repository entry (config.pbtxt + 1/model.plan, 1/model.onnx or 1/model.xml+.bin).

    Names, dtypes, dims, classes and the batch limit are read from the model itself (its
    record: the graph and its metadata, or the engine's sidecar), inferred where not recorded.
    """
    from deploy.cli.present import echo_triton
    from deploy.commands.triton import write_triton_entry

    if config is not None:  # --config: the instances, batching and backend parameters tune found
        from deploy.deployconfig import load_config, model_source, triton_notes, triton_settings

        refuse_with_config(("onnx", "engine", "backend", "precision", "threads", "streams", "instances",
                            "max_batch_size",
                            "dynamic_batching", "preferred_batch_sizes", "max_queue_delay_us", "instance_kind"))
        check = load_config(config)
        echo_notes([*check.warnings, *triton_notes(check.config)])
        found = model_source(check.config)
        if found.path is None:
            raise click.UsageError(f"{Path(config).name} runs a PyTorch variant, which Triton has no backend for")
        entry = write_triton_entry(found.path, repository, format="engine" if found.engine else "onnx",
                                   **{**serving, **triton_settings(check.config)})
    elif no_model_given(source):
        raise click.UsageError("give exactly one of --engine or --onnx (or --config deploy.json)")
    else:
        entry = write_triton_entry(source.path, repository, format="engine" if source.engine else "onnx",
                                   runtime=runtime.backend, threads=runtime.options.threads,
                                   streams=runtime.options.streams, precision=runtime.options.precision, **serving)
    if not out.emit(entry.to_dict()):
        echo_triton(entry)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=True))
@model_source(variant="either", weights="variant", pretrained=True,
              file_help={"onnx": "ONNX classifier graph, or its OpenVINO IR .xml."})
@runtime_options(threads=False, device=True)
@shape_options()
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=5, help="Classes to show per image.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="Class names, one per line [default: those the model file records (export --labels)].")
@click.option("--resolution", "-r", type=PredictResolution(), default=None,
              help="224, HxW or native (each image's own size) [default: the weights config's 224 crop].")
@json_output()
def predict(images: tuple[str, ...], source: ModelSource, runtime: Runtime, top_k: int, labels: str | None,
            resolution: Any, out: JsonOut) -> None:
    """Top-k classes of each IMAGE with softmax probabilities.

    Any backend: --engine (TensorRT), --onnx (onnxruntime, or OpenVINO) or --variant (PyTorch).
    Images and options may come in any order. An image that cannot be read is
    reported on stderr and the others are still answered; the exit code is then 1.
    """
    from deploy.cli.present import echo_prediction
    from deploy.commands.predict import predict_files

    def show(res: Any) -> None:
        if not res.ok:
            click.echo(f"Error: {res.error}", err=True)
        elif not out.printing:
            echo_prediction(res)

    answer = predict_files(source, images, backend_name=runtime.backend, options=runtime.options, k=top_k,
                           labels=labels, resolution=resolution, on_note=lambda n: echo_notes([n]), on_result=show)
    out.emit(answer.to_dict())
    if answer.failed:
        raise click.ClickException(f"{answer.failed} of {len(answer.results)} images could not be classified")


@main.command(cls=GreedyCommand)
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Labelled images: one folder per class (ImageFolder), or any layout with --labels-file.")
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Lines 'relative/path label_index' (paths relative to --data), as ImageNet val lists.")
@model_source(variant="row", weights="variant", pretrained=True, multiple=True)
@runtime_options(reads=("onnx",), multiple=True, threads=False, aliases=("--onnx-backend",))
@shape_options()
@click.option("--batch", "-b", type=click.IntRange(min=1), default=32, help="Images per inference.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N images.")
@click.option("--resolution", "-r", type=RESOLUTION, default=None, help="Input size (224 or HxW) [default: the model's 224 crop].")
@json_output()
def evaluate(data: str, labels_file: str | None, sources: list[ModelSource], runtime: Runtime, batch: int,
             limit: int | None, resolution: tuple[int, int] | None, out: JsonOut) -> None:
    """Top-1/top-5 accuracy on a labelled image set, every backend side by side on the same images.

    Rows: --variant (PyTorch FP32, the reference: accuracy difference and image-by-image
    top-1 agreement are against it), each --onnx on each --backend, each --engine; every row
    must classify into the same classes. Unreadable images are skipped and named. Exit 2 for
    an unusable data set (empty, no class folders, bad list line, label beyond the model's
    classes); exit 1 when no image can be read.
    """
    from deploy.cli.present import echo_evaluation
    from deploy.commands.evaluate import evaluate_files

    with count_progress("evaluating", quiet=out.printing) as progress:
        report = evaluate_files(data, sources, labels_file=labels_file, backends=runtime.backends,
                                options=runtime.options, batch=batch, limit=limit, resolution=resolution,
                                progress=progress, on_note=lambda n: echo_notes([n]))
    if not out.emit(report.to_dict()):
        echo_evaluation(report)
        if out.path:
            click.echo(f"wrote {out.path}")


@main.command()
@model_source(variant="either", weights="variant", pretrained=True, file_required=False)
@config_option("serve")
@runtime_options(device=True)
@shape_options()
@click.option("--model-name", default=None, help="Triton model name [default: the artifact's name, Triton-safe].")
@click.option("--host", default="127.0.0.1", help="Address to bind (0.0.0.0: reachable from other machines).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, help="KServe v2 over HTTP.")
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, help="KServe v2 over gRPC.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, help="Prometheus metrics (/metrics).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, help="Triton max_batch_size.")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=2000, help="Dynamic batcher queue delay.")
@click.option("--instances", type=click.IntRange(min=1), default=1, help="Model instances (inference callables).")
@click.option("--top-k", type=click.IntRange(min=1), default=5, help="Classes the NAME_image model returns.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Class names, one per line (for NAME_image's labels).")
@click.option("--start-timeout-s", type=click.FloatRange(min=1), default=120.0, help="Give up when not ready by then.")
@json_output()
def serve(source: ModelSource, config: str | None, runtime: Runtime, model_name: str | None, labels: str | None,
          out: JsonOut, start_timeout_s: float, **server: Any) -> None:
    """Serve a model on a real Triton Inference Server (PyTriton, the [serve] extra) until SIGTERM/SIGINT.

    NAME: input 'input' FP32 [-1, 3, -1, -1] -> 'logits' (the I/O of 'triton' repositories);
    NAME_image: encoded images (BYTES) -> top-k classes, scores, labels. Dynamic batching batches
    requests of one size together. A client, HTTP (use tritonclient.grpc and port 8001 for gRPC):

    \b
      import numpy as np, tritonclient.http as tc
      c = tc.InferenceServerClient("127.0.0.1:8000")
      x = tc.InferInput("input", [1, 3, 224, 224], "FP32")
      x.set_data_from_numpy(np.zeros((1, 3, 224, 224), np.float32))
      logits = c.infer("convmlp", [x]).as_numpy("logits")
    """
    import deploy
    from deploy.cli.present import echo_serving
    from deploy.commands.serve import ServeOptions, check_pytriton, default_model_name
    from deploy.commands.serve import serve as run_serve

    check_pytriton()  # before anything is loaded
    if config is not None:  # --config: exactly the deployment tune found (deploy.deployconfig)
        from deploy.deployconfig import serve_settings

        refuse_with_config(("onnx", "engine", "variant", "weights", "pretrained", "backend", "precision", "threads",
                            "device", "max_batch", "max_queue_delay_us", "instances"))
        model = deploy.load(config=config, labels=labels)
        server.update(serve_settings(model.deployment))
        echo_notes([f"--config {config}: {model.deployment.label()}, max batch {server['max_batch']}, queue delay "
                    f"{server['max_queue_delay_us']} us, {server['instances']} instance(s)"])
    elif no_model_given(source):
        raise click.UsageError("give exactly one of --engine, --onnx or --variant (or --config deploy.json)")
    else:
        model = deploy.load(source if source.path is None else source.path, backend=runtime.backend,
                            precision=runtime.options.precision, threads=runtime.options.threads,
                            device=runtime.options.device, labels=labels, shapes=runtime.options.shapes)
    with model:
        options = ServeOptions(model_name=model_name or default_model_name(model), start_timeout_s=start_timeout_s,
                               **server)
        echo_notes(model.notes + ([f"--host {options.host}: the server is reachable from other machines"]
                                  if options.host not in ("127.0.0.1", "localhost", "::1") else []))
        run_serve(model, options, on_ready=lambda info: out.emit(info) or echo_serving(info, model))


@main.command(cls=GreedyCommand)
@model_source(variant="or-hint", files=("onnx",), weights="variant", multiple=True,
              file_help={"onnx": "Graphs to search over: the FP32 graph (required), FP16/INT8 graphs and IRs."})
@click.option("--calibration", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --variant: also export the INT8 graph (CPU layout), calibrated on these images.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Held-out photographs (at least 8, up to 64 used): every precision's gate is measured on them.")
@click.option("--gate", type=click.Choice(["images", "grid"]), default="images",
              help="What the gates are measured on: --images, or the synthetic grid (grid: no --images needed).")
@click.option("--shapes", default="224",
              help="The workload: 224, 320x480, cycle:224,320x480, random:64-512, or a file of sizes.")
@click.option("--batch", "-b", type=click.IntRange(min=1), multiple=True, default=(1,), help="Batch size(s) to try.")
@click.option("--objective", type=click.Choice(["latency", "throughput"]), default="latency",
              help="What 'fastest' means: p50 latency per query, or images/s.")
@click.option("--max-p99-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Only configurations whose p99 latency is at most this.")
@click.option("--min-top1-agreement", type=click.FloatRange(0, 1), default=None,
              help="Top-1 agreement with PyTorch on --images that every precision must reach [default: each "
                   "precision's gate].")
@click.option("--budget-s", type=click.FloatRange(min=0, min_open=True), default=300.0,
              help="Stop after this long with the best found so far.")
@click.option("--output", "-o", type=OutputFile(), default="deploy.json",
              help="The deployment found (serve --config, triton --config, deploy.load(config=)).")
@click.option("--csv", "csv_out", type=OutputFile(), default=None, help="Write one CSV row per candidate.")
@click.option("--plot", "plot_out", type=OutputFile(PLOT_FORMATS), default=None,
              help="Image of latency against accuracy, the chosen point marked (needs matplotlib).")
@json_output()
def tune(sources: list[ModelSource], calibration: str | None, images: str | None, gate: str, shapes: str,
         batch: tuple[int, ...], objective: str, max_p99_ms: float | None, min_top1_agreement: float | None,
         budget_s: float, output: str, csv_out: str | None, plot_out: str | None, out: JsonOut) -> None:
    """Find the fastest deployment whose accuracy gate holds, on this machine, and write it (-o deploy.json).

    Searches every backend and precision this machine runs (BF16 where the CPU has it, each INT8 graph
    given) x threads x streams x batch x shape policy. Each (graph, backend, precision) is first held to
    its precision's gate on --images; a failing one is never timed. Survivors are timed against the best
    so far in alternating rounds (noise cannot crown a winner) and pruned by successive halving until
    --budget-s. Exit 2 before any work for a request that cannot work (too few images, a budget too small
    for one candidate); exit 3 when every candidate fails its gate; Ctrl-C writes the best so far, marked
    partial (exit 130).
    """
    from deploy.cli.tune_view import echo_tune, export_graphs, tune_progress
    from deploy.commands.bench import write_text
    from deploy.commands.tune import TuneRequest, plot_trials, prepare, run_tune, trials_csv
    from deploy.deployconfig import write_config

    variant = next((s.variant for s in sources if s.variant), None)
    weights = next((s.weights for s in sources if s.weights), None)
    if any(s.pretrained for s in sources):
        raise click.UsageError("tune takes --weights (a local checkpoint), not --pretrained")
    request = TuneRequest(onnx=[s.onnx for s in sources if s.onnx is not None], variant=variant, weights=weights,
                          calibration=Path(calibration) if calibration else None,
                          images=Path(images) if images else None, gate=gate, shapes=shapes, batches=batch,
                          objective=objective, max_p99_ms=max_p99_ms, min_top1_agreement=min_top1_agreement,
                          budget_s=budget_s, output=Path(output), export=export_graphs,
                          log=(lambda msg: None) if out.printing else (lambda msg: click.echo(msg, err=True)))
    prepare(request)  # exit 2 before any work
    with tune_progress(quiet=out.printing) as progress:
        request.on_progress = progress
        result = run_tune(request)
    written = [str(write_config(output, result.config))] if result.config is not None else []
    interrupted = result.search.stopped == "interrupted"
    if not interrupted:
        written += [str(write_text(csv_out, trials_csv(result.rows())))] if csv_out else []
        written += [str(plot_trials(result, plot_out))] if plot_out else []
    if not out.emit(result.to_dict()):
        echo_tune(result, written)
    if interrupted:
        click.echo("interrupted: " + (f"the best so far is in {output}, marked partial" if written else
                                      "no candidate had passed its gate; nothing written"), err=True)
        raise click.exceptions.Exit(130)
    if result.failure is not None:
        raise ValidationFailed(result.failure)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
