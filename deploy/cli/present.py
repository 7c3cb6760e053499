"""How the CLI shows things: aligned tables, JSON, progress (a rich bar on a terminal, plain lines in
logs), and each command's rendering of its report. ``cli.py`` parses, calls the library, and prints
through these; nothing here computes anything the JSON does not already hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

__all__ = [
    "echo_table", "echo_json", "echo_notes", "echo_validation", "validation_failure", "echo_layers",
    "echo_layer_times", "echo_profile", "echo_export", "export_failure", "echo_build", "echo_benchmark",
    "echo_triton", "echo_prediction", "echo_evaluation", "echo_doctor", "count_progress", "bench_progress",
    "echo_serving", "endpoint_block", "echo_endpoint_report", "echo_stream",
    "VALIDATION_COLUMNS", "EVAL_COLUMNS", "PLOT_FORMATS",
]


def echo_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print ``rows`` as an aligned text table; ``columns`` are (key, header) pairs."""
    raw = [[r.get(k) for k, _ in columns] for r in rows]
    # a column of near-one values (cosines) prints them all with six decimals, 1.0 included
    fine = [any(_near_one(row[i]) and row[i] != 1 for row in raw) for i in range(len(columns))]
    cells = [[h for _, h in columns]] + [[_fmt(v, fine[i]) for i, v in enumerate(row)] for row in raw]
    numeric = [all((isinstance(row[i], (int, float)) and not isinstance(row[i], bool)) or row[i] is None
                   for row in raw) for i in range(len(columns))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        line = [c.rjust(w) if n and num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        click.echo("  ".join(line).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def _near_one(value: Any) -> bool:
    return isinstance(value, float) and 0.999 <= abs(value) <= 1


def _fmt(value: Any, fine: bool = False) -> str:
    """One cell; ``fine``: the column holds near-one values, which all get six decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if (0.999 <= abs(value) < 1) or (fine and _near_one(value)):
            return f"{value:.6f}"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


VALIDATION_COLUMNS = [
    ("case", "case"), ("name", "output"), ("max_abs", "max abs"), ("rel_l2", "rel L2"),
    ("cosine_min", "cosine"), ("top1", "top-1"), ("top5", "top-5"), ("passed", "ok"),
]


def echo_validation(report: Any) -> None:
    """Print a ``ValidationReport`` as a table with its verdict."""
    tol = report.tolerance
    click.echo(f"{report.model} on {report.backend} vs PyTorch FP32, weights {report.weights}")
    unchecked = tol.min_top1_agreement is not None and report.top1_agreement is None
    click.echo(f"gate ({tol.precision}): {tol.describe(report.images_name)}"
               + (f" (no {report.images_name} in this run: top-1 agreement not checked)" if unchecked else ""))
    grid = getattr(report, "grid_tolerance", None)
    if tol.input_dependent:  # which set carried the accuracy gate (deploy.compare.gate_plan)
        click.echo(f"accuracy gate on: {report.carried_by}"
                   + (f"; synthetic grid: {grid.describe()}" if grid is not None and grid != tol else ""))
        if report.gate_note:
            click.echo(f"note: {report.gate_note}")
    echo_table(report.rows(), VALIDATION_COLUMNS)
    if report.top1_agreement is not None and tol.min_top1_agreement is not None:
        click.echo(f"top-1 agreement on the {report.images_name}: {report.top1_agreement:.1%}"
                   + ("" if report.native_top1_agreement is None else
                      f" (at their own sizes: {report.native_top1_agreement:.1%})"))
    click.echo("PASSED" if report.passed else "FAILED: " + "; ".join(report.failures))


def echo_layer_times(profile: Any, top: int = 15) -> None:
    """Per op type, then the ``top`` slowest layers, per run."""
    click.echo("")
    click.echo(f"per layer ({profile.backend}, {'x'.join(map(str, profile.shape))}, {profile.runs} runs): "
               f"{profile.total_ms:.3g} ms of layer time per run")
    echo_table([{"op": o.op, "ms": o.ms, "pct": o.pct, "nodes": o.nodes} for o in profile.ops],
               [("op", "op"), ("ms", "ms/run"), ("pct", "%"), ("nodes", "layers")])
    click.echo("")
    kernels = any(t.exec_type for t in profile.layers)  # OpenVINO names the kernel that ran each layer
    echo_table([{"layer": t.name, "op": t.op, "exec": t.exec_type, "ms": t.ms, "pct": t.pct} for t in profile.top(top)],
               [("layer", f"slowest {top} layers"), ("op", "op"), *([("exec", "exec type")] if kernels else []),
                ("ms", "ms/run"), ("pct", "%")])


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
                   f"{layers.floor:g} and {layers.ratio:g}x the error of what it reads")
    else:
        click.echo(f"no jump: every tensor stays below {layers.floor:g} or within {layers.ratio:g}x of the "
                   "errors of what its layer reads (the error grows smoothly)")


EVAL_COLUMNS = [
    ("name", "model"), ("precision", "precision"), ("top1", "top-1"), ("top5", "top-5"),
    ("top1_vs_reference", "vs torch (pts)"), ("agreement", "agrees w/ torch"), ("images_per_s", "images/s"),
]


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


def echo_notes(notes: Sequence[str]) -> None:
    """``Note: ...`` lines on stderr, each once."""
    for note in dict.fromkeys(notes):
        click.echo(f"Note: {note}", err=True)


def validation_failure(report: Any, printing: bool) -> str:
    """The one-line reason a validation exits 3 (the reasons themselves when stdout is JSON)."""
    if printing:
        return "validation failed: " + "; ".join(report.failures)
    failed = sum(not c.passed for c in report.cases)
    return f"validation failed on {failed} of {len(report.cases)} cases (the FAILED line above says why)"


def echo_profile(results: Sequence[dict[str, Any]]) -> None:
    echo_table(results, [("variant", "variant"), ("resolution", "resolution"), ("mparams", "params (M)"),
                         ("gmacs", "GMACs")])


def echo_export(result: Any) -> None:
    """Each graph's validation table, then one line per graph written (or not)."""
    for g in result.graphs:
        click.echo("")
        echo_validation(g.validation)
    click.echo("")
    width = max(len(g.name) for g in result.graphs)
    for g in result.graphs:
        state = f"{g.size_bytes / 2**20:.1f} MiB" if result.passed else "not written"
        unit = "layers" if g.weights_path else "nodes"
        click.echo(f"{g.name:>{width}}: {g.path} ({g.nodes} {unit}, {state})")
    fallback = (result.report.get("int8") or {}).get("fallback")
    if fallback:
        echo_fallback(fallback)
    if result.report_path:
        click.echo(f"  report: {result.report_path}")
    click.echo(f"total {result.timings['total_s']:.1f} s")


def echo_fallback(fallback: dict[str, Any]) -> None:
    """What ``--int8-fallback`` tried, step by step, and what it settled on."""
    click.echo("")
    before, after = fallback["before"], fallback["after"]
    click.echo(f"int8 fallback: {fallback['quantized_layers']} quantized layers ranked on {fallback['ranked_on']} "
               f"in {fallback['search_s']:.1f} s; rel L2 there {before['rel_l2']:.4g} with none in float")
    echo_table([{"n": s["layers"], "layer": s["added"], "rel_l2": s["rel_l2"], "cosine": s["cosine"],
                 "gate": s["gate"]} for s in fallback["steps"]],
               [("n", "in float"), ("layer", "layer added"), ("rel_l2", "rel L2"), ("cosine", "cosine"),
                ("gate", "full gate")])
    if fallback["passed"]:
        click.echo(f"int8 fallback: passes with {len(fallback['layers'])} layers in float "
                   f"(rel L2 {before['rel_l2']:.4g} -> {after['rel_l2']:.4g} on the ranking images)")
    else:
        click.echo(f"int8 fallback: gave up at its limit of {fallback['limit']} layers in float "
                   "(--int8-fallback-limit)")


def export_failure(result: Any, printing: bool) -> str:
    if printing:
        text = "validation failed, nothing written: " + "; ".join(result.failures)
    else:
        failed = [g.name for g in result.graphs if not g.validation.passed]
        text = f"validation failed for the {', '.join(failed)} graph (see above), nothing written"
    for r in result.rejected:
        jump = r.first_jump
        where = (f": its error first jumps at {jump.node} ({jump.op}, rel L2 {jump.rel_l2:.3g})" if jump
                 else "")
        text += f"; the rejected {r.name} graph is kept as {r.path}{where} (validate --onnx {r.path} --per-layer)"
    return text


def echo_build(result: Any) -> None:
    m = result.manifest
    click.echo(f"built {result.engine_path} ({result.engine_bytes / 1e6:.1f} MB) in {result.build_seconds:.1f} s")
    click.echo(f"  {m.precision} {m.kind} convmlp_{m.variant or '?'}, TensorRT {m.tensorrt_version}, "
               f"{m.gpu_name} (sm {m.compute_capability})")
    click.echo(f"  manifest: {result.manifest_path}")
    echo_table([{"profile": i, "min": p.min, "opt": p.opt, "max": p.max} for i, p in enumerate(m.profiles)],
               [("profile", "profile"), ("min", "min"), ("opt", "opt"), ("max", "max")])


def echo_benchmark(run: Any, written: Sequence[str]) -> None:
    """The machine line, the summary table, trtexec's warnings, per-layer times and the files written."""
    from ..commands.bench.report import machine_line

    report = run.report
    click.echo(machine_line(report.machine, report.versions))
    echo_table(report.rows(), report.columns())
    for r in report.results:
        for w in r.warnings:
            click.echo(f"warning: b{r.batch} {r.height}x{r.width}: {w.message}")
    if run.layers is not None:
        echo_layer_times(run.layers)
    for path in written:
        click.echo(f"wrote {path}")


def echo_triton(entry: Any) -> None:
    opts, model = entry.options, entry.model
    click.echo(f"wrote {entry.config_path.parent} ({entry.served_by}, max_batch_size {opts.max_batch_size})")
    rows = [
        {"io": io, "name": t.name, "data_type": t.data_type, "dims": "[" + ", ".join(map(str, t.dims)) + "]"}
        for io, ts in (("input", model.inputs), ("output", model.outputs))
        for t in ts
    ]
    echo_table(rows, [("io", "io"), ("name", "name"), ("data_type", "data type"), ("dims", "dims")])
    batching = f"dynamic, preferred {list(opts.preferred_batch_sizes) or 'any'}" if opts.dynamic_batching else "off"
    click.echo(f"instances: {opts.instances} x KIND_{opts.instance_kind.upper()}; batching: {batching}")
    for note in entry.notes:
        click.echo(f"Note: {note}", err=True)


def echo_prediction(result: Any) -> None:
    """One image's top-k table, with a label column when the classes have names (an unreadable image is
    reported on stderr by the caller)."""
    shape = "x".join(map(str, result.input_shape or ()))
    click.echo(f"{result.image}  [{shape}]")
    cols = [("rank", "rank"), ("index", "class")] + ([("label", "label")] if any(s.label is not None for s in result.top) else [])
    echo_table([s.to_dict() for s in result.top], cols + [("probability", "probability")])
    if result.note:
        click.echo(f"Note: {result.note}", err=True)
    click.echo("")


def echo_evaluation(report: Any) -> None:
    click.echo(f"{report.images} images from {report.dataset} ({report.form}), {len(report.skipped)} skipped")
    rows = report.rows()
    for r in rows:
        for k in ("top1", "top5", "agreement"):
            if r[k] is not None:
                r[k] = f"{100 * r[k]:.2f}%"
    echo_table(rows, EVAL_COLUMNS)
    for line in report.skipped:
        click.echo(f"skipped {line}", err=True)


def echo_doctor(report: dict[str, Any]) -> None:
    from ..commands.doctor import command_rows, component_rows

    echo_table(component_rows(report), [("component", "component"), ("status", "status")])
    click.echo()
    echo_table(command_rows(report), [("command", "command"), ("ok", "ok"), ("note", "note")])


def echo_serving(info: dict[str, Any], model: Any) -> None:
    """What ``serve`` serves and where, once it is ready (stderr: stdout may be JSON)."""
    click.echo(f"serving {model.name} ({model.backend}, {model.precision}) as '{info['model']}' and "
               f"'{info['image_model']}': HTTP {info['http']}, gRPC {info['grpc']}, metrics {info['metrics']}; "
               "SIGTERM or Ctrl-C stops it", err=True)


def endpoint_block(result: Any) -> None:
    """One level of ``benchmark --endpoint`` as it finishes."""
    p = "-" if result.p50_ms is None else f"{result.p50_ms:.2f}/{result.p90_ms:.2f}/{result.p99_ms:.2f} ms"
    click.echo(f"clients {result.concurrency}: {result.images_per_s:.1f} images/s, {result.requests_per_s:.1f} "
               f"requests/s, p50/p90/p99 {p}, {result.errors} errors")


def echo_endpoint_report(report: Any, csv_out: str | None, plot_out: str | None, *, quiet: bool) -> list[str]:
    """Write ``--csv``/``--plot`` of ``benchmark --endpoint``, print its table; returns the files written."""
    from ..commands.bench.endpoint import plot_endpoint_report
    from ..commands.bench.report import machine_line, write_text

    written = [str(write_text(csv_out, report.to_csv()))] if csv_out else []
    written += [str(plot_endpoint_report(report, plot_out))] if plot_out else []
    if not quiet:
        click.echo(machine_line(report.machine, report.versions))
        click.echo(f"{report.model} at {report.endpoint} over {report.protocol}, shapes "
                   f"{', '.join('x'.join(map(str, s)) for s in report.shapes)}")
        echo_table(report.rows(), report.COLUMNS)
        for r in report.results:
            if r.first_error:
                click.echo(f"warning: {r.errors} errors at {r.concurrency} clients, the first: {r.first_error}")
    return written


def echo_stream(report: Any, written: Sequence[str]) -> None:
    """``benchmark --shapes``: the machine, what was sent, the stream and reference rows, then the ratio,
    first sights and what the runner says of its shapes (a ``StreamReport``)."""
    from ..commands.bench.report import machine_line
    from ..shapes import format_size

    click.echo(machine_line(report.machine, report.versions))
    click.echo(f"{report.runner}: {report.spec.describe()}, reference {format_size(report.spec.reference)} "
               "interleaved")
    echo_table(report.rows(), report.COLUMNS)
    for line in report.summary_lines():
        click.echo(line)
    for path in written:
        click.echo(f"wrote {path}")


def echo_remeasured(result: Any) -> None:
    """``benchmark --config``: the deployment's figures now beside those ``tune`` recorded, and the ratio on
    the objective's figure (a ``deploy.commands.tune.remeasure.Remeasured``)."""
    from ..machine import machine_info

    d = result.to_dict()
    m = machine_info(result.config.device)
    click.echo(f"{m.get('cpu') or m.get('device', '')}: {d['deployment']}; workload {d['workload']['spec']} "
               f"({len(d['workload']['sizes'])} sizes), {d['rounds']} rounds x {d['passes_per_round']} pass(es)")
    rows = [{"what": "now", **d["now"]}, {"what": "recorded by tune", **d["recorded"]}]
    echo_table(rows, [("what", ""), ("size_p50_ms", "per-size p50 ms"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                      ("images_per_s", "images/s"), ("ms_per_mpx", "ms/Mpx")])
    ratio = result.ratio()
    each = ", ".join(f"{getattr(f, result.key):.4g}" for f in result.processes)
    if ratio is None:
        click.echo(f"{d['figure']} in {len(result.processes)} fresh process(es): {each}; the deployment records no "
                   "figure to compare with")
    else:
        click.echo(f"{d['figure']}: now {ratio:.2f}x what tune recorded (the median of {len(result.processes)} fresh "
                   f"process(es): {each})")
    if d["unsteady"]:
        click.echo(f"warning: {d['unsteady']}")
