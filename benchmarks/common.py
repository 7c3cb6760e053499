"""What every benchmark script shares: the repository on ``sys.path``, the standard options, a log line
with the elapsed time, and writing the markdown + JSON results (atomically, the machine named).

A script imports it first (``import common``), which puts the repository root on ``sys.path`` once, so the
library imports that follow resolve to this checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from convmlp.factory import VARIANTS  # noqa: E402
from deploy.commands.bench import BenchReport, Case, TimingConfig, write_text  # noqa: E402
from deploy.commands.bench.interleave import run_interleaved  # noqa: E402
from deploy.commands.bench.report import machine_line  # noqa: E402
from deploy.machine import machine_info, versions  # noqa: E402

__all__ = ["RESULTS", "ROOT", "VARIANTS", "add_cases", "add_out", "add_peak", "add_timing", "add_variants",
           "all_cases", "bench_report", "by_case", "error_table", "interleaved_parser", "interleaved_report", "log", "machine_header",
           "parser", "parse_args", "photo_sets", "shapes", "time_interleaved", "timing_config", "write_report", "write_results"]

#: where the published results live: every script's default ``--out``
RESULTS = ROOT / "benchmarks" / "results"
#: the percentiles the interleaved CPU scripts report
PERCENTILES = (90.0, 95.0, 99.0)

_START = time.perf_counter()


def log(msg: str) -> None:
    """One progress line on stderr, with the seconds since the script started."""
    print(f"[{time.perf_counter() - _START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parser(doc: str | None, *, first_line: bool = False) -> argparse.ArgumentParser:
    """The script's parser, described by the first paragraph (or line) of its docstring."""
    text = doc or ""
    return argparse.ArgumentParser(description=text.splitlines()[0] if first_line else text.split("\n\n")[0])


def interleaved_parser(doc: str | None, stem: str, cases: Sequence[Case], *, duration_s: float, rounds: int,
                       warmup_ms: float) -> argparse.ArgumentParser:
    """The options every interleaved CPU script takes: ``--variants``, ``--cases``, the timing, and ``--out``
    for ``STEM.md`` and ``STEM.json``."""
    ap = parser(doc)
    add_variants(ap)
    add_cases(ap, cases)
    add_timing(ap, duration_s=duration_s, rounds=rounds, warmup_ms=warmup_ms)
    add_out(ap, f"{stem}.md", f"{stem}.json")
    return ap


def add_variants(ap: argparse.ArgumentParser, default: Sequence[str] = VARIANTS, *, one: bool = False) -> None:
    """``--variants`` (or ``--variant`` with ``one``), choices from ConvMLP's own variant table."""
    if one:
        ap.add_argument("--variant", default=default[0], choices=VARIANTS)
    else:
        ap.add_argument("--variants", nargs="+", default=list(default), choices=VARIANTS)


def add_timing(ap: argparse.ArgumentParser, *, duration_s: float, rounds: int | None = None,
               warmup_ms: float | None = None, threads: int | None = 2) -> None:
    """``--duration-s`` and, where given a default, ``--rounds``, ``--warmup-ms`` and ``--threads``."""
    ap.add_argument("--duration-s", type=float, default=duration_s, help="timed seconds per target per case")
    if rounds is not None:
        ap.add_argument("--rounds", type=int, default=rounds, help="alternating rounds per case")
    if warmup_ms is not None:
        ap.add_argument("--warmup-ms", type=float, default=warmup_ms)
    if threads is not None:
        ap.add_argument("--threads", type=int, default=threads, help="inference threads")


def add_cases(ap: argparse.ArgumentParser, default: Sequence[Case]) -> None:
    """``--cases BATCHxSIDE ...`` (square inputs), defaulting to the script's own cases."""
    ap.add_argument("--cases", nargs="+", default=[f"{c.batch}x{c.height}" for c in default],
                    help="BATCHxSIDE, e.g. 1x224 4x320")


def add_out(ap: argparse.ArgumentParser, *names: str, default: Path | None = RESULTS) -> None:
    """``--out DIR`` for the named result files (default: ``benchmarks/results``; required with ``default=None``)."""
    ap.add_argument("--out", type=Path, required=default is None, default=default,
                    help=f"folder for {' and '.join(names)}" if names else "results folder")


def add_peak(ap: argparse.ArgumentParser, n: int) -> None:
    """``--peak-n``: the side of the square matmul that measures the machine's peak."""
    ap.add_argument("--peak-n", type=int, default=n, help=f"matmul side for the peak (default {n})")


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None, *,
               counts: Sequence[str] = ()) -> argparse.Namespace:
    """Parse, refuse non-positive timing and counts (``--rounds``, ``--threads``, ``--peak-n`` and the
    options named in ``counts``), and turn ``--cases`` into ``Case`` objects."""
    args = ap.parse_args(argv)
    if getattr(args, "duration_s", 1.0) <= 0 or getattr(args, "warmup_ms", 0.0) < 0:
        ap.error("--duration-s must be > 0 and --warmup-ms >= 0")
    for name in ("rounds", "threads", "peak_n", *counts):
        if getattr(args, name, 1) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if hasattr(args, "cases"):
        try:
            args.cases = [Case(int(b), int(s), int(s)) for b, s in (c.lower().split("x") for c in args.cases)]
        except ValueError:
            ap.error("--cases are BATCHxSIDE, e.g. 1x224 4x320")
    return args


def timing_config(args: argparse.Namespace) -> TimingConfig:
    """The timing the standard options describe (``--rounds`` is also the minimum of iterations)."""
    timing = TimingConfig(warmup_s=getattr(args, "warmup_ms", 0.0) / 1e3, duration_s=args.duration_s)
    rounds = getattr(args, "rounds", None)
    return timing if rounds is None else TimingConfig(warmup_s=timing.warmup_s, duration_s=timing.duration_s,
                                                      min_iterations=rounds)


def shapes(cases: Sequence[Case]) -> list[list[int]]:
    """The cases as NCHW lists, for a result's settings."""
    return [list(c.shape) for c in cases]


def bench_report(settings: dict[str, Any], device: str = "cpu") -> BenchReport:
    """An empty report naming this machine and the runtime versions, with the script's settings."""
    return BenchReport(machine=machine_info(device), versions=versions(), settings=settings)


def interleaved_report(args: argparse.Namespace, timing: TimingConfig, **settings: Any) -> BenchReport:
    """``bench_report`` with the settings every interleaved CPU script records (timing, threads, rounds,
    the script's own, the percentiles)."""
    return bench_report({"timing": timing.to_dict(), "threads": args.threads, "rounds": args.rounds, **settings,
                         "percentiles": list(PERCENTILES)})


def time_interleaved(report: BenchReport, speedups: list[Any], targets: Sequence[Any], cases: Sequence[Case],
                     timing: TimingConfig, rounds: int, what: str, *,
                     percentiles: Sequence[float] = PERCENTILES, **kw: Any) -> tuple[list[Any], list[Any]]:
    """Log ``time WHAT``, time ``targets`` in alternating rounds, add the results to ``report`` and the speed-ups
    to ``speedups``; returns this run's results and speed-ups."""
    log(f"time {what}")
    part, found = run_interleaved(list(targets), list(cases), timing, rounds=rounds, percentiles=tuple(percentiles),
                                  **kw)
    report.results += part.results
    speedups += found
    return part.results, found


def by_case(items: Sequence[Any]) -> dict[tuple[Any, ...], list[Any]]:
    """Results (``CaseResult``) or speed-ups (``Speedup``) grouped by (variant, batch, height, width), in order."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for it in items:
        case = getattr(it, "case", it)
        out.setdefault((it.variant, case.batch, case.height, case.width), []).append(it)
    return out


def error_table(acc: dict[str, dict[str, dict[str, float]]], what: str = "path") -> list[str]:
    """Markdown rows of each variant's errors against PyTorch FP32 (rel L2, cosine, top-1, top-5)."""
    out = [f"| variant | {what} | rel L2 | min cosine | top-1 agreement | top-5 overlap |", "|---|---|---:|---:|---:|---:|"]
    for v, by in acc.items():
        for name, m in by.items():
            out.append(f"| {v} | {name} | {m['rel_l2']:.4f} | {m['cosine_min']:.5f} | {m['top1']:.1%} | {m['top5']:.1%} |")
    return out


def photo_sets(folder: Path, calibration: int, held_out: int) -> tuple[list[Path], list[Path]]:
    """Crops of the calibration photographs and of the held-out ones (disjoint sources), in ``folder``."""
    from tests.photos import CALIBRATION_PHOTOS, HELD_OUT_PHOTOS, make_photo_set

    return (make_photo_set(folder / "calib", calibration, sources=CALIBRATION_PHOTOS, seed=0),
            make_photo_set(folder / "held", held_out, sources=HELD_OUT_PHOTOS, seed=1))


def all_cases(report: BenchReport) -> list[str]:
    """The closing markdown lines: every case's table, then the report's warnings."""
    out = ["", "All cases:", "", report.markdown_table(), ""]
    notes = report.warning_lines()
    return out + (["Warnings:", "", *notes, ""] if notes else [])


def machine_header(device: str = "cpu") -> str:
    """``Machine: ...``: the machine and the runtime versions, for the top of a markdown result."""
    return f"Machine: {machine_line(machine_info(device), versions())}"


def write_report(out: Path, stem: str, markdown: str, report: BenchReport, speedups: Sequence[Any],
                 **extra: Any) -> int:
    """``write_results`` for an interleaved run: the report, the script's ``extra`` keys, then the speed-ups
    (``Speedup`` objects or dicts); returns 0, the script's exit status."""
    data = {**report.to_dict(), **extra,
            "speedups": [s if isinstance(s, dict) else s.to_dict() for s in speedups]}
    write_results(out, stem, markdown, data)
    return 0


def write_results(out: Path, stem: str, markdown: str, data: dict[str, Any] | None = None) -> Path:
    """``OUT/STEM.md`` and, with ``data``, ``OUT/STEM.json``, each written atomically; prints the markdown
    and returns the markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    if data is not None:
        write_text(out / f"{stem}.json", json.dumps(data, indent=2, default=str) + "\n")
    md = write_text(out / f"{stem}.md", markdown if markdown.endswith("\n") else markdown + "\n")
    print(markdown)
    log(f"wrote {md}" + (f" and {stem}.json" if data is not None else ""))
    return md
