"""convmlp-deploy: export, build, validate, benchmark and serve ConvMLP.

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 validation failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from convmlp import VARIANTS, CheckpointError, __version__

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


# --------------------------------------------------------------------------- output helpers


def echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print ``rows`` as an aligned text table; ``columns`` are (key, header) pairs."""
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's expected failures into one-line ``click`` errors (exit 1)."""
    from deploy.errors import DeployError
    from export.errors import ExportError

    try:
        yield
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
def profile(variant: str, resolution: tuple[tuple[int, int], ...], features: bool, as_json: bool) -> None:
    """Parameters and GMACs (multiply-accumulates) at each resolution, batch 1."""
    from convmlp.profile import profile_variant

    results = [p.to_dict() for p in profile_variant(variant.lower(), list(resolution), features_only=features)]
    if as_json:
        echo_json(results[0] if len(results) == 1 else results)
        return
    echo_table(
        results,
        [("variant", "variant"), ("resolution", "resolution"), ("mparams", "params (M)"), ("gmacs", "GMACs")],
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
