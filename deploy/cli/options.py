"""The CLI's reusable parts: parameter types, option groups and the one mapping of errors to exit codes.

A command takes its options in groups (after Polygraphy's ``tools/args`` and datasette's Click
decorators), so a flag is declared once, with one help text, and checked once:

- ``json_output``: ``--json`` (print JSON to stdout, nothing else) and ``--json-out FILE``; the
  command receives ``out: JsonOut``;
- ``model_source``: ``--variant``/``--onnx``/``--engine`` with ``--weights``/``--pretrained``, the
  "exactly one of" rule by mode; the command receives ``source: ModelSource`` (``sources`` for many);
- ``runtime_options``: ``--backend``, ``--precision``, ``--threads``, ``--streams``, ``--device``, their
  choices generated from the ``deploy.backends`` rows; the command receives ``runtime: Runtime``.

``Group`` maps the library's two error bases to exit codes for every command: ``OptionError`` 2,
``DeployError`` (and ``convmlp.CheckpointError``) 1; ``ValidationFailed`` is 3.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from convmlp import VARIANTS, CheckpointError

from ..artifacts import unwritable
from ..backends import BACKENDS, RunnerOptions, runtime_precisions
from ..commands.bench.stats import parse_percentiles
from ..errors import DeployError, OptionError
from ..loader import ModelSource
from ..modelfile.profiles import ShapeProfile, parse_shape
from ..precision import ALIASES, AUTO

__all__ = [
    "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_VALIDATION", "ValidationFailed", "Group", "GreedyCommand",
    "Resolution", "RESOLUTION", "PredictResolution", "Parsed", "SHAPE", "PROFILE", "PERCENTILES", "OutputFile", "Precision",
    "VARIANT", "JsonOut", "json_output", "model_source", "Runtime", "runtime_options", "endpoint_options",
    "stream_options", "shape_options",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_VALIDATION = 0, 1, 2, 3


class ValidationFailed(click.ClickException):
    """Outputs differ beyond tolerance: exit code 3."""

    exit_code = EXIT_VALIDATION


class Group(click.Group):
    """A Click group that turns the library's expected failures into one-line errors, once for all commands."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OptionError as exc:
            raise click.UsageError(str(exc)) from None
        except MemoryError as exc:  # the estimate let it through, the allocator did not
            detail = f" ({str(exc).splitlines()[0][:120]})" if str(exc).strip() else ""
            raise click.ClickException(f"out of memory{detail}: try a smaller --batch or --resolution") from None
        except (DeployError, CheckpointError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None


class GreedyCommand(click.Command):
    """Lets ``multiple=True`` options take several values after one flag.

    ``--resolution 224 512`` is read as ``--resolution 224 --resolution 512``;
    positional arguments therefore go before such options.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        greedy = {opt for p in self.params if isinstance(p, click.Option) and p.multiple for opt in p.opts}
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


# --------------------------------------------------------------------------- parameter types


class Resolution(click.ParamType):
    """``224`` (square) or ``HxW`` (``320x640``), each side >= 32."""

    name = "RES"

    #: what a malformed value is told; ``None``: sides below 32 are left to the caller's own check
    malformed = "is not a resolution: use 224 or HxW like 320x640"
    min_side: int | None = 32

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().strip().split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            dims = []
        if len(dims) == 1:
            dims = dims * 2
        if len(dims) != 2:
            self.fail(f"{value!r} {self.malformed}", param, ctx)
        if self.min_side is not None and min(dims) < self.min_side:
            self.fail(f"{value!r}: ConvMLP needs height and width >= {self.min_side}", param, ctx)
        return dims[0], dims[1]


RESOLUTION = Resolution()
VARIANT = click.Choice(VARIANTS, case_sensitive=False)


class PredictResolution(Resolution):
    """``Resolution`` plus ``native`` (keep each image's own size)."""

    name = "RES|native"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == "native":
            return "native"
        return super().convert(value, param, ctx)


class Parsed(click.ParamType):
    """A value a library function parses: its ``ValueError`` becomes the option's usage error."""

    def __init__(self, name: str, parse: Callable[[str], Any], parsed: type) -> None:
        self.name, self.parse, self.parsed = name, parse, parsed

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.parsed):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: an NCHW shape ``8x3x224x224``; a profile ``MIN:OPT:MAX``; latency percentiles ``90,95,99``
SHAPE = Parsed("NxCxHxW", parse_shape, tuple)
PROFILE = Parsed("MIN:OPT:MAX", ShapeProfile.parse, ShapeProfile)
PERCENTILES = Parsed("P,P,...", parse_percentiles, tuple)


class OutputFile(click.ParamType):
    """A file the command will write, checked while parsing: not a folder, its folder exists, is a folder
    and takes a new file (a temp file is made and removed there), and (``formats``) a known extension."""

    name = "FILE"

    def __init__(self, formats: Sequence[str] | None = None) -> None:
        self.formats = tuple(formats) if formats else None

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = os.fspath(value)
        p = Path(text)
        if p.is_dir():
            self.fail(f"{text} is a folder; give a file name", param, ctx)
        if self.formats is not None and p.suffix.lower().lstrip(".") not in self.formats:
            self.fail(f"{text}: '{p.suffix or 'no extension'}' is not a format it writes; use one of "
                      f".{', .'.join(self.formats)}", param, ctx)
        parent = p.parent if str(p.parent) else Path(".")
        if parent.exists() and not parent.is_dir():
            self.fail(f"{parent} is a file, not a folder", param, ctx)
        if not parent.is_dir():
            self.fail(f"folder {parent} does not exist", param, ctx)
        problem = unwritable(parent)
        if problem:
            self.fail(problem, param, ctx)
        return text


class Precision(click.Choice):
    """A precision of ``deploy.precision``: the choices given, and their aliases (``f32``), as canonical names."""

    def __init__(self, choices: Sequence[str]) -> None:
        super().__init__(list(choices), case_sensitive=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        key = str(value).strip().lower()
        return super().convert(ALIASES.get(key, key), param, ctx)


# --------------------------------------------------------------------------- JSON output


@dataclass(frozen=True)
class JsonOut:
    """``--json`` (stdout is the JSON and nothing else) and ``--json-out FILE`` (the same JSON, written)."""

    printing: bool = False
    path: str | None = None

    def emit(self, data: Any) -> bool:
        """Write ``data`` to ``--json-out``, print it for ``--json``; True when it was printed."""
        from ..artifacts import atomic_write_json
        from .present import echo_json

        if self.path is not None:
            atomic_write_json(self.path, data)
        if self.printing:
            echo_json(data)
        return self.printing


def json_output(*, legacy_file: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json`` and ``--json-out FILE``; the command gets ``out: JsonOut``.

    ``legacy_file``: ``--json FILE`` also writes FILE, with a deprecation note (``benchmark`` only).
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, json_flag: Any, json_out: str | None, **kwargs: Any) -> Any:
            printing = bool(json_flag)
            if legacy_file and json_flag not in (None, "-"):
                click.echo("Note: '--json FILE' is deprecated: use --json-out FILE (--json alone prints to stdout)",
                           err=True)
                if json_out is not None:
                    raise OptionError("give --json-out FILE once (not also the deprecated --json FILE)")
                json_out, printing = OutputFile().convert(json_flag, None, None), False
            return f(*args, out=JsonOut(printing, json_out), **kwargs)

        wrapper = click.option("--json-out", type=OutputFile(), default=None,
                               help="Also write the JSON to FILE (checked before any work).")(wrapper)
        if legacy_file:
            return click.option("--json", "json_flag", is_flag=False, flag_value="-", default=None, metavar="",
                                help="Print the JSON to stdout (nothing else there). '--json FILE' still works but "
                                     "is deprecated: use --json-out FILE.")(wrapper)
        return click.option("--json", "json_flag", is_flag=True,
                            help="Print the JSON to stdout (nothing else there).")(wrapper)

    return decorate


# --------------------------------------------------------------------------- the model


_FILE_HELP = {
    "onnx": "ONNX graph from 'export' (.fp16.onnx, .int8.onnx...) or its OpenVINO IR .xml.",
    "engine": "TensorRT engine (with its .json sidecar) from 'build'.",
}
#: modes of --variant: the only model (required), one of the models (either), the model when no file is
#: given and the file's variant otherwise (or-hint), a hint for a file (hint)
_VARIANT_HELP = {
    "required": "ConvMLP variant.",
    "either": "ConvMLP variant, run on PyTorch.",
    "or-hint": "ConvMLP variant: the model for PyTorch; with --onnx/--engine, the variant for GMACs.",
    "hint": "Variant of the file [default: from its metadata].",
    "row": "ConvMLP variant on PyTorch FP32: the reference row.",
}


def model_source(
    *,
    variant: str | None = "either",
    files: Sequence[str] = ("onnx", "engine"),
    weights: str | None = "variant",
    pretrained: bool = False,
    multiple: bool = False,
    file_help: dict[str, str] | None = None,
    file_required: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--variant``, ``--onnx``, ``--engine``, ``--weights``, ``--pretrained``; the command gets
    ``source: ModelSource`` (``sources: list[ModelSource]`` with ``multiple``).

    ``variant``: a mode of ``_VARIANT_HELP`` (None: no --variant). ``weights``: ``variant`` (the
    variant's checkpoint), ``reference`` (the checkpoint a file was exported from) or None.
    ``multiple``: several --onnx and --engine, each a row, the variant a row of its own. ``file_required``:
    False where another option can name the model (``--endpoint``); the command checks then.
    """
    helps = {**_FILE_HELP, **(file_help or {})}

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            v = kwargs.pop("variant", None)
            onnx = kwargs.pop("onnx", () if multiple else None)
            engine = kwargs.pop("engine", () if multiple else None)
            w = kwargs.pop("weights", None)
            pre = kwargs.pop("pretrained", False)
            sources = _sources(variant if file_required else "optional", tuple(files), v.lower() if v else None, onnx,
                               engine, w, pre, weights, multiple)
            if multiple:
                return f(*args, sources=sources, **kwargs)
            return f(*args, source=sources[0], **kwargs)

        if pretrained:
            wrapper = click.option("--pretrained", is_flag=True,
                                   help="Official ImageNet-1k weights (downloads through the torch.hub cache).")(wrapper)
        if weights is not None:
            text = ("Checkpoint the file was exported from [default: synthetic weights]." if weights == "reference"
                    else "Checkpoint for --variant (official layout; its head gives the classes) "
                         "[default: synthetic weights].")
            wrapper = click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
                                   help=text)(wrapper)
        for name in reversed(files):
            wrapper = click.option(f"--{name}", name, type=click.Path(exists=True, dir_okay=False),
                                   multiple=multiple, help=helps[name] + (" Several allowed." if multiple else ""))(wrapper)
        if variant is not None:
            wrapper = click.option("--variant", "-v", "variant", type=VARIANT, required=variant == "required",
                                   default=None, help=_VARIANT_HELP[variant])(wrapper)
        return wrapper

    return decorate


def _sources(
    mode: str | None, files: tuple[str, ...], variant: str | None, onnx: Any, engine: Any, weights: str | None,
    pretrained: bool, weights_mode: str | None, multiple: bool,
) -> list[ModelSource]:
    """The model(s) the options name, or an ``OptionError`` saying which combination is wrong."""
    w = Path(weights) if weights else None
    if weights and pretrained:
        raise OptionError("give either --weights or --pretrained, not both")
    if multiple:
        files = [ModelSource(onnx=Path(p)) for p in onnx] + [ModelSource(engine=Path(p)) for p in engine]
        if variant is None:  # the weights would be a file's: each carries its own
            ModelSource(weights=w, pretrained=pretrained).check_weights()
        return ([ModelSource(variant=variant, weights=w, pretrained=pretrained)] if variant else []) + files
    names = " or ".join(f"--{n}" for n in sorted(files, key=lambda n: n != "engine"))  # --engine or --onnx
    source = ModelSource(variant=variant, onnx=Path(onnx) if onnx else None,  # refuses --onnx with --engine
                         engine=Path(engine) if engine else None, weights=w, pretrained=pretrained)
    path = source.path
    if mode == "either" and (path is None) == (variant is None):
        raise OptionError("give exactly one of --engine, --onnx or --variant")
    if mode in ("hint", None) and path is None and files:
        raise OptionError(f"give exactly one of {names}" if len(files) > 1 else f"give {names} PATH")
    if weights_mode == "variant" and path is not None:
        source.check_weights()
    return [source]


# --------------------------------------------------------------------------- how it runs


@dataclass(frozen=True)
class Runtime:
    """The run-time choices: the backend (None: the model's own), several for ``evaluate``, the options,
    and ``--device`` as given (None: the backend's first device)."""

    backend: str | None
    backends: tuple[str, ...]
    options: RunnerOptions
    device: str | None = None


def runtime_options(
    *,
    reads: Sequence[str] = ("variant", "onnx", "engine"),
    multiple: bool = False,
    precision: bool = True,
    threads: bool = True,
    streams: bool = False,
    device: bool = False,
    backend_help: str | None = None,
    aliases: Sequence[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--backend`` (choices: the ``deploy.backends`` rows that read ``reads``), ``--precision``
    (every run-time precision a row offers, plus aliases), ``--threads``, ``--streams``, ``--device``;
    the command gets ``runtime: Runtime``."""
    names = [n for n, b in BACKENDS.items() if b.reads in reads]
    default_help = ("Runtime [default: the file's: onnxruntime for .onnx, openvino for an IR .xml, tensorrt for an "
                    "engine, torch for --variant]." if not multiple else
                    "Runtime(s) for each --onnx [default: onnxruntime; openvino for an IR]; several give a row each.")

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            chosen = kwargs.pop("backend", () if multiple else None)
            dev = kwargs.pop("device", None)
            options = RunnerOptions(device=dev, precision=kwargs.pop("precision", None),
                                    threads=kwargs.pop("threads", None), streams=kwargs.pop("streams", None))
            if multiple:
                return f(*args, runtime=Runtime(None, tuple(chosen), options, dev), **kwargs)
            return f(*args, runtime=Runtime(chosen, (chosen,) if chosen else (), options, dev), **kwargs)

        if device:
            wrapper = click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                                   help="Device for PyTorch and onnxruntime [default: cpu].")(wrapper)
        if streams:
            wrapper = click.option("--streams", type=click.IntRange(min=1), default=None,
                                   help="Queries in flight: TensorRT execution contexts, OpenVINO NUM_STREAMS.")(wrapper)
        if threads:
            wrapper = click.option("--threads", type=click.IntRange(min=1), default=None,
                                   help="CPU threads (PyTorch, onnxruntime, OpenVINO).")(wrapper)
        if precision:
            offered = ", ".join(f"{n}: {'/'.join(b.precisions)}" for n, b in BACKENDS.items()
                                if b.precisions and n in names)
            wrapper = click.option(
                "--precision", type=Precision(runtime_precisions()), default=None,
                help=f"Run-time precision where the backend chooses it ({offered}; {AUTO}: the backend's default, "
                     "BF16 where the CPU has it); files carry their own. f32 is read as fp32.")(wrapper)
        wrapper = click.option("--backend", *aliases, "backend", type=click.Choice(names), multiple=multiple,
                               default=None, help=backend_help or default_help)(wrapper)
        return wrapper

    return decorate


# --------------------------------------------------------------------------- a served model


def endpoint_options(*, concurrency: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--endpoint HOST:PORT``, ``--model-name``, ``--protocol`` (and ``--concurrency``); the command gets
    ``endpoint: (url, model, protocol) | None`` (and ``concurrency``)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            url, name, protocol = kwargs.pop("endpoint"), kwargs.pop("model_name"), kwargs.pop("protocol")
            if url is None and name is not None:
                raise OptionError("--model-name goes with --endpoint HOST:PORT")
            if url is not None and name is None:
                raise OptionError("--endpoint needs --model-name NAME (the served model)")
            if url is not None and not re.fullmatch(r"[^\s:/]+:\d{1,5}", url):
                raise OptionError(f"--endpoint {url!r}: give HOST:PORT (127.0.0.1:8000)")
            if concurrency and url is None and kwargs["concurrency"]:
                raise OptionError("--concurrency goes with --endpoint (it sets the clients in flight)")
            return f(*args, endpoint=(url, name, protocol) if url else None, **kwargs)

        if concurrency:
            wrapper = click.option("--concurrency", type=click.IntRange(min=1), multiple=True, default=(),
                                   help="Clients in flight, several allowed (--concurrency 1 2 4 8) [default: 1 2 4 8].")(
                wrapper)
        wrapper = click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http",
                               help="KServe v2 protocol of --endpoint.")(wrapper)
        wrapper = click.option("--model-name", default=None, help="The served model's name (with --endpoint).")(wrapper)
        return click.option("--endpoint", default=None, metavar="HOST:PORT",
                            help="A running KServe-v2 server (serve, or Triton serving a 'triton' repository) "
                                 "instead of a file.")(wrapper)

    return decorate


# --------------------------------------------------------------------------- a stream of sizes


def stream_options(*, excludes: Sequence[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--shapes SPEC`` / ``--shapes-file FILE`` (a stream of sizes), ``--requests``, ``--seed``,
    ``--reference-size``; the command gets ``stream: StreamSpec | None`` (None: no stream asked). The batch
    of sizes given without one is the command's ``--batch`` (one value). ``excludes``: names of the
    command's parameters a stream has no use for, refused beside it when given on the command line."""
    from ..commands.bench.stream import DEFAULT_REFERENCE, DEFAULT_REQUESTS, parse_stream, read_shapes_file

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            shapes, shapes_file = kwargs.pop("shapes"), kwargs.pop("shapes_file")
            choices = {"requests": kwargs.pop("requests"), "seed": kwargs.pop("seed"),
                       "reference": kwargs.pop("reference_size")}
            if shapes is None and shapes_file is None:
                flag = next((f"--{k.replace('reference', 'reference-size')}" for k, v in choices.items()
                             if v is not None), None)
                if flag:
                    raise OptionError(f"{flag} goes with --shapes or --shapes-file")
                return f(*args, stream=None, **kwargs)
            if shapes is not None and shapes_file is not None:
                raise OptionError("give either --shapes or --shapes-file, not both")
            given = "--shapes" if shapes is not None else "--shapes-file"
            ctx = click.get_current_context()
            for p in ctx.command.params:
                if p.name in excludes and ctx.get_parameter_source(p.name) in (
                        click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
                    raise OptionError(f"{given} measures a stream of sizes: {p.opts[0]} does not go with it")
            batches = tuple(kwargs.get("batch") or (1,))
            if len(set(batches)) > 1:
                raise OptionError(f"{given} takes one --batch (the batch of every size given without one), "
                                  f"not {' '.join(map(str, batches))}")
            opts = {"batch": batches[0], "requests": choices["requests"], "seed": choices["seed"] or 0,
                    "reference": choices["reference"]}
            spec = parse_stream(shapes, **opts) if shapes is not None else read_shapes_file(shapes_file, **opts)
            return f(*args, stream=spec, **kwargs)

        wrapper = click.option("--reference-size", default=None, metavar="SIZE",
                               help=f"With --shapes: the fixed size measured beside the stream, interleaved "
                                    f"[default: {DEFAULT_REFERENCE} at --batch].")(wrapper)
        wrapper = click.option("--seed", type=int, default=None,
                               help="With --shapes random:...: the seed of the draw [default: 0].")(wrapper)
        wrapper = click.option("--requests", type=click.IntRange(min=1), default=None,
                               help=f"With --shapes: stream requests [default: {DEFAULT_REQUESTS}; a file: each "
                                    "line once].")(wrapper)
        wrapper = click.option("--shapes-file", type=click.Path(), default=None, metavar="FILE",
                               help="A stream of sizes from FILE, in turn: one a line (N, HxW or BxHxW; # "
                                    "comments).")(wrapper)
        return click.option("--shapes", default=None, metavar="SPEC",
                            help="Measure a stream of sizes instead of the sweep: random:LO-HI (height and width "
                                 "uniform in [LO, HI]) or cycle:224,320x480,... (in turn).")(wrapper)

    return decorate


# --------------------------------------------------------------------------- how sizes are served


def shape_options(*, default: str = "dynamic") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--shape-policy dynamic|static``, ``--warmup SIZE...``, ``--cache-size``, ``--specialize-after``,
    ``--max-specialized``: one ``deploy.shapes.ShapePolicy``, parsed before any work. Put it below
    ``runtime_options``: the policy goes into ``runtime.options.shapes`` (without ``runtime_options``, the
    command gets ``shapes: ShapePolicy``). ``default``: the command's policy (``benchmark``: static)."""
    from ..shapes import (
        DEFAULT_CACHE_BYTES,
        DEFAULT_MAX_SPECIALIZED,
        DEFAULT_SPECIALIZE_AFTER,
        MODES,
        ShapePolicy,
        format_bytes,
        parse_bytes,
        parse_sizes,
    )

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mode = kwargs.pop("shape_policy")
            warm = kwargs.pop("warmup_sizes")
            cache = kwargs.pop("cache_size")
            after, most = kwargs.pop("specialize_after"), kwargs.pop("max_specialized")
            if mode == "static" and after is not None:
                raise OptionError("--specialize-after goes with --shape-policy dynamic (static compiles every "
                                  "size on first sight)")
            changes: dict[str, Any] = {"warmup": parse_sizes(warm) if warm else ()}
            if cache is not None:
                changes["cache_bytes"] = cache
            if after is not None:
                changes["specialize_after"] = after
            if most is not None:
                changes["max_specialized"] = most
            policy = ShapePolicy(mode=mode, **changes)
            runtime = kwargs.get("runtime")
            if isinstance(runtime, Runtime):
                kwargs["runtime"] = Runtime(runtime.backend, runtime.backends, runtime.options.with_(shapes=policy),
                                            runtime.device)
                return f(*args, **kwargs)
            return f(*args, shapes=policy, **kwargs)

        wrapper = click.option(
            "--max-specialized", type=click.IntRange(min=0), default=None, metavar="N",
            help=f"Most executables of one size kept in memory, least recently used out (static: most "
                 f"compiled sizes; 0: the dynamic one only) [default: {DEFAULT_MAX_SPECIALIZED}].")(wrapper)
        wrapper = click.option(
            "--specialize-after", type=click.IntRange(min=1), default=None, metavar="K",
            help=f"Dynamic policy: a size sent K times gets an executable of its own, made off the request "
                 f"path [default: {DEFAULT_SPECIALIZE_AFTER}].")(wrapper)
        wrapper = click.option(
            "--cache-size", type=Parsed("SIZE", lambda v: parse_bytes(v, option="--cache-size"), int),
            default=None, metavar="SIZE",
            help=f"Bound of the on-disk compiled-model cache (OpenVINO: ~/.cache/convmlp-deploy/openvino), least "
                 f"recently used out: 2G, 500M; 0 turns it off [default: {format_bytes(DEFAULT_CACHE_BYTES)}].")(wrapper)
        wrapper = click.option(
            "--warmup", "warmup_sizes", type=str, multiple=True, default=(),
            metavar="SIZE",
            help="Sizes given their own executable before the model is ready: 224, 320x480, 2x512 (batch 2), "
                 "several allowed (--warmup 224,320x480).")(wrapper)
        return click.option(
            "--shape-policy", type=click.Choice(MODES), default=default,
            help="How input sizes are served: dynamic (one dynamic-shape executable answers any size at once; "
                 "sizes that recur get their own, made off the request path) or static (one executable per "
                 "size, compiled on first sight, on the request path).")(wrapper)

    return decorate

