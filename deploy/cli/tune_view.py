"""How ``tune`` shows itself: a progress bar with the best so far, the table of every candidate, the verdict.
Nothing here computes what the result does not already hold."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from .present import echo_notes, echo_table

__all__ = ["tune_progress", "echo_tune", "export_graphs"]


def export_graphs(request: Any) -> list[Any]:
    """``tune --variant``: export the graphs to search over with the export library (the FP32 graph, and the
    INT8 CPU-layout graph with ``--calibration``), validated as ``export`` validates them."""
    from export.pipeline import ExportConfig, run_export

    from ..errors import DeployError

    cfg = ExportConfig(variant=request.variant, output_dir=request.folder, weights=request.weights,
                       int8=request.calibration is not None, calibration=request.calibration, int8_layout="cpu")
    result = run_export(cfg, log=request.log)
    if not result.passed:
        raise DeployError(f"export into {request.folder} failed its gates: {'; '.join(result.failures)[:300]}")
    return [g.path for g in result.graphs]


def _best_text(search: Any) -> str:
    best = search.best
    if best is None:
        return "no candidate has passed its gate yet"
    f = best.figures
    figure = "" if f is None else (f", per-size p50 {f.size_p50_ms:.3g} ms" if search.objective == "latency"
                                   else f", {f.images_per_s:.4g} images/s")
    return f"best: {best.candidate.label}{figure}"


@contextmanager
def tune_progress(*, quiet: bool) -> Iterator[Any]:
    """``progress(search)``: a rich bar on a terminal's stderr (candidates decided, the phase, the best so
    far), else a plain line whenever the best changes."""
    from rich.console import Console

    console = Console(stderr=True)
    if quiet:
        yield None
        return
    if not console.is_terminal:
        last: dict[str, Any] = {"best": None}

        def plain(search: Any) -> None:
            key = (search.phase, search.best.candidate.index if search.best else None)
            if key != last["best"]:
                last["best"] = key
                click.echo(f"tune: {search.phase}: {_best_text(search)}", err=True)

        yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("tune {task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[best]}"), console=console, transient=True) as bar:
        task = bar.add_task("tune", total=None, phase="gating", best="")

        def update(search: Any) -> None:
            done = sum(t.status not in ("not reached", "gated") for t in search.trials)
            bar.update(task, completed=done, total=len(search.trials), phase=search.phase, best=_best_text(search))

        yield update


def echo_tune(result: Any, written: list[str]) -> None:
    """Left-out backends, the table, how the search pruned and what it covered, the choice, the files."""
    from ..commands.tune import COLUMNS
    from ..commands.tune.search import ETA, MARGIN, ROUNDS, WIN_ROUNDS

    machine = result.config.machine if result.config is not None else None
    if machine:
        click.echo(f"machine: {machine['cpu']} ({' '.join(machine['flags']) or 'no BF16/INT8 flags'}), "
                   f"{machine['usable_cores']} usable cores")
    click.echo(f"workload: {result.workload.spec} at batch {'/'.join(map(str, result.request.batches))}, "
               f"objective {result.request.objective}; gates on the {result.gate_set}")
    for line in result.space.left_out:
        click.echo(f"left out: {line}")
    echo_table(result.rows(), COLUMNS)
    click.echo(f"search: gate first (once per file, backend and precision), then successive halving (eta {ETA}, "
               f"queries doubling per rung), each timing interleaved against the best in {ROUNDS} alternating "
               f"rounds; a challenger wins at a median ratio >= {1 + MARGIN:g} over >= {WIN_ROUNDS:.0%} of rounds")
    click.echo(result.search.coverage_line())
    echo_notes(result.notes)
    if result.config is not None:
        cfg = result.config
        m = cfg.measured
        figures = (f": per-size p50 {m['size_p50_ms']:.3g} ms, p50 {m['p50_ms']:.3g} ms, p99 {m['p99_ms']:.3g} ms, "
                   f"{m['images_per_s']:.4g} images/s, {m['ms_per_mpx']:.4g} ms/Mpx" if "p50_ms" in m else " (not timed)")
        click.echo(f"chosen: {cfg.model.path} on {cfg.label()}{figures}")
    for path in written:
        click.echo(f"wrote {path}")
