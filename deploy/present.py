"""How the CLI shows things: aligned tables, JSON, progress (a rich bar on a terminal, plain lines in
logs), the per-command renderings of reports, and the output-path check every file-writing option
uses before any work starts. ``cli.py`` parses, calls the library, and prints through these.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

__all__ = [
    "echo_table", "echo_json", "write_json", "echo_validation", "echo_layers", "echo_layer_times", "check_output_file",
    "count_progress", "bench_progress", "VALIDATION_COLUMNS", "EVAL_COLUMNS", "PLOT_FORMATS",
]


def echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print ``rows`` as an aligned text table; ``columns`` are (key, header) pairs."""
    raw = [[r.get(k) for k, _ in columns] for r in rows]
    cells = [[h for _, h in columns]] + [[_fmt(v) for v in row] for row in raw]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in raw) for i in range(len(columns))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        line = [c.rjust(w) if n and num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        click.echo("  ".join(line).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if 0.999 <= abs(value) < 1:
            return f"{value:.6f}"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def write_json(path: str | Path, obj: Any) -> Path:
    """``--json-out FILE``: the same JSON ``--json`` prints, written atomically."""
    from .artifacts import atomic_write_bytes

    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


VALIDATION_COLUMNS = [
    ("case", "case"), ("name", "output"), ("max_abs", "max abs"), ("rel_l2", "rel L2"),
    ("cosine_min", "cosine"), ("top1", "top-1"), ("top5", "top-5"), ("passed", "ok"),
]


def echo_validation(report: Any) -> None:
    """Print a ``ValidationReport`` as a table with its verdict."""
    tol = report.tolerance
    click.echo(f"{report.model} on {report.backend} vs PyTorch FP32, weights {report.weights}")
    click.echo(f"gate ({tol.precision}): {tol.describe()}")
    echo_table(report.rows(), VALIDATION_COLUMNS)
    if report.top1_agreement is not None and tol.min_top1_agreement is not None:
        click.echo(f"top-1 agreement on the real photos: {report.top1_agreement:.1%}")
    click.echo("PASSED" if report.passed else "FAILED: " + "; ".join(report.failures))


def echo_layer_times(profile: Any, top: int = 15) -> None:
    """Per op type, then the ``top`` slowest layers, per run."""
    click.echo("")
    click.echo(f"per layer ({profile.backend}, {'x'.join(map(str, profile.shape))}, {profile.runs} runs): "
               f"{profile.total_ms:.3g} ms of layer time per run")
    echo_table([{"op": o.op, "ms": o.ms, "pct": o.pct, "nodes": o.nodes} for o in profile.ops],
               [("op", "op"), ("ms", "ms/run"), ("pct", "%"), ("nodes", "layers")])
    click.echo("")
    echo_table([{"layer": t.name, "op": t.op, "ms": t.ms, "pct": t.pct} for t in profile.top(top)],
               [("layer", f"slowest {top} layers"), ("op", "op"), ("ms", "ms/run"), ("pct", "%")])


def echo_layers(layers: Any) -> None:
    """The per-layer table and the verdict: the first layer whose error jumps."""
    click.echo("")
    click.echo(f"per layer: {Path(layers.checked).name} vs {Path(layers.reference).name} "
               f"on one {'x'.join(map(str, layers.input_shape))} input ({len(layers.layers)} tensors matched, "
               f"{len(layers.unmatched)} not)")
    echo_table([{"index": e.index, "node": e.node, "op": e.op, "rel_l2": e.rel_l2, "cosine": e.cosine}
                for e in layers.layers],
               [("index", "#"), ("node", "layer"), ("op", "op"), ("rel_l2", "rel L2"), ("cosine", "cosine")])
    jump = layers.first_jump
    if jump is not None:
        click.echo(f"first jump: {jump.node} ({jump.op}, tensor #{jump.index}): rel L2 {jump.rel_l2:.3g}, above "
                   f"{layers.floor:g} and {layers.ratio:g}x every error before it")
    else:
        click.echo(f"no jump: every tensor stays below {layers.floor:g} or within {layers.ratio:g}x of the "
                   "errors before it (the error grows smoothly)")


EVAL_COLUMNS = [
    ("name", "model"), ("precision", "precision"), ("top1", "top-1"), ("top5", "top-5"),
    ("top1_vs_reference", "vs torch (pts)"), ("agreement", "agrees w/ torch"), ("images_per_s", "images/s"),
]


def check_output_file(path: str, option: str, *, formats: Sequence[str] | None = None) -> None:
    """Refuse, before any work, an output file that cannot be written (exit 2, naming the option):
    a folder, a missing or read-only parent folder, or (``formats``) an extension not in the list."""
    import os
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise click.BadParameter(f"{path} is a folder; give a file name", param_hint=option)
    if formats is not None and p.suffix.lower().lstrip(".") not in formats:
        raise click.BadParameter(
            f"{path}: '{p.suffix or 'no extension'}' is not a format it writes; use one of .{', .'.join(formats)}",
            param_hint=option,
        )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise click.BadParameter(f"folder {parent} does not exist", param_hint=option)
    if not os.access(parent, os.W_OK):
        raise click.BadParameter(f"folder {parent} is not writable", param_hint=option)


#: what matplotlib writes (``--plot``): by file extension
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps")


@contextmanager
def count_progress(what: str, *, quiet: bool) -> Iterator[Any]:
    """``progress(done, total)``: a rich bar on a terminal's stderr, else a plain line every 10%."""
    from rich.console import Console

    console = Console(stderr=True)
    if quiet:
        yield None
        return
    if not console.is_terminal:
        step = {"last": -1}

        def plain(done: int, total: int) -> None:
            tenth = done * 10 // max(total, 1)
            if tenth != step["last"] or done == total:
                step["last"] = tenth
                click.echo(f"{what}: {done}/{total}", err=True)

        yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def bench_progress(cases: int, per_case_s: float | None, quiet: bool) -> Iterator[Any]:
    """A rich progress bar on stderr for runs longer than a couple of seconds; when stderr is not a
    terminal (CI logs), one plain line as each case starts."""
    from rich.console import Console

    console = Console(stderr=True)
    if quiet or (per_case_s is not None and cases * per_case_s < 2.0 and console.is_terminal):
        yield None
        return
    if not console.is_terminal:
        started: set[int] = set()

        def plain(index: int, case: Any, fraction: float) -> None:
            if index not in started:
                started.add(index)
                click.echo(f"benchmark: case {index + 1}/{cases} {case.label} ...", err=True)

        yield plain
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:
        task = bar.add_task("benchmark", total=float(cases))

        def update(index: int, case: Any, fraction: float) -> None:
            bar.update(task, completed=index + fraction, description=f"case {index + 1}/{cases} {case.label}")

        yield update
