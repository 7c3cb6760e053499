"""Benchmark results: one row per case, the machine and versions they were taken on,
and their renderings (text-table rows, markdown, CSV, JSON, plot)."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...artifacts import atomic_savefig, atomic_write_bytes
from ...errors import BackendUnavailable, DeployError
from ...precision import run_precision
from ...runners.base import Runner
from .stats import (
    PerfWarning,
    TimeStats,
    achieved_tflops,
    diagnose,
    peak_fraction,
    summarize,
    throughput,
)
from .targets import BenchTarget, macs_per_image
from .timing import Case, RawTimings

__all__ = [
    "CaseResult",
    "BenchReport",
    "summarize_case",
    "summarize_target",
    "ENQUEUE_HINTS",
    "table_columns",
    "write_text",
    "plot_report",
]


@dataclass
class CaseResult:
    """Everything measured for one (backend, variant, batch, resolution)."""

    runner: str
    backend: str
    variant: str | None
    device: str
    precision: str | None
    batch: int
    height: int
    width: int
    iterations: int
    queries: int
    warmup_iterations: int
    wall_s: float
    total_s: float
    queries_per_s: float
    images_per_s: float
    latency: TimeStats
    host: TimeStats
    h2d: TimeStats | None = None
    compute: TimeStats | None = None
    d2h: TimeStats | None = None
    enqueue: TimeStats | None = None
    gmacs: float | None = None
    tflops: float | None = None
    peak_fraction: float | None = None
    warnings: list[PerfWarning] = field(default_factory=list)
    kind: str | None = None  # "classifier" or "features"
    model: str | None = None  # the model file's name (or the PyTorch variant)

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def label(self) -> str:
        """``convmlp_s.fp16.onnx fp16 classifier on onnxruntime[CPU]``: what was timed, told apart."""
        parts = [self.model or (f"convmlp_{self.variant}" if self.variant else "model"), self.precision, self.kind]
        return " ".join(p for p in parts if p) + f" on {self.runner}"

    def summary_block(self) -> list[str]:
        """trtexec's per-case summary: throughput, then latency min/mean/median/max/p99."""
        lat = self.latency
        p99 = lat.percentiles.get("p99")
        lines = [
            f"=== {self.label}: batch {self.batch}, {self.height}x{self.width} ===",
            f"Throughput: {self.queries_per_s:.4g} qps ({self.images_per_s:.4g} images/s)",
            f"Latency: min = {lat.min:.4g} ms, mean = {lat.mean:.4g} ms, median = {lat.median:.4g} ms, "
            f"max = {lat.max:.4g} ms" + (f", p99 = {p99:.4g} ms" if p99 is not None else ""),
        ]
        if self.compute is not None:
            lines.append(f"GPU compute: median = {self.compute.median:.4g} ms; H2D {self.h2d.median if self.h2d else 0:.3g} ms, "
                         f"D2H {self.d2h.median if self.d2h else 0:.3g} ms, enqueue {self.enqueue.median if self.enqueue else 0:.3g} ms")
        if self.tflops is not None:
            lines.append(f"Compute: {self.gmacs or 0:.4g} GMACs/image, {self.tflops:.3g} TFLOP/s"
                         + (f" ({100 * self.peak_fraction:.0f}% of peak)" if self.peak_fraction is not None else ""))
        return lines

    def to_dict(self) -> dict[str, Any]:
        def stats(s: TimeStats | None) -> dict[str, Any] | None:
            return s.to_dict() if s is not None else None

        return {
            "runner": self.runner,
            "backend": self.backend,
            "model": self.model,
            "variant": self.variant,
            "kind": self.kind,
            "device": self.device,
            "precision": self.precision,
            "batch": self.batch,
            "resolution": [self.height, self.width],
            "pixels": self.pixels,
            "iterations": self.iterations,
            "queries": self.queries,
            "warmup_iterations": self.warmup_iterations,
            "wall_s": self.wall_s,
            "total_s": self.total_s,
            "queries_per_s": self.queries_per_s,
            "images_per_s": self.images_per_s,
            "gmacs_per_image": self.gmacs,
            "gmacs_per_query": self.gmacs * self.batch if self.gmacs is not None else None,
            "tflops": self.tflops,
            "peak_fraction": self.peak_fraction,
            "latency_ms": stats(self.latency),
            "host_ms": stats(self.host),
            "h2d_ms": stats(self.h2d),
            "compute_ms": stats(self.compute),
            "d2h_ms": stats(self.d2h),
            "enqueue_ms": stats(self.enqueue),
            "warnings": [w.to_dict() for w in self.warnings],
        }

    def row(self) -> dict[str, Any]:
        """Flat cells for the text table, markdown and CSV."""
        r: dict[str, Any] = {
            "runner": self.runner,
            "model": self.model,
            "precision": self.precision,
            "kind": self.kind,
            "variant": self.variant,
            "batch": self.batch,
            "resolution": f"{self.height}x{self.width}",
            "gmacs": round(self.gmacs, 3) if self.gmacs is not None else None,
            "qps": self.queries_per_s,
            "ips": self.images_per_s,
            "mean_ms": self.latency.mean,
            "median_ms": self.latency.median,
            "min_ms": self.latency.min,
            "max_ms": self.latency.max,
        }
        for k, v in self.latency.percentiles.items():
            r[f"{k}_ms"] = v
        r["cv_pct"] = self.latency.cv * 100
        r["tflops"] = self.tflops
        r["peak_pct"] = self.peak_fraction * 100 if self.peak_fraction is not None else None
        for name in ("h2d", "compute", "d2h", "enqueue"):
            s = getattr(self, name)
            r[f"{name}_ms"] = s.median if s is not None else None
        r["wall_s"] = self.wall_s
        r["warnings"] = ",".join(w.code for w in self.warnings) or None
        return r


def summarize_case(
    raw: RawTimings,
    case: Case,
    *,
    runner: str,
    backend: str,
    variant: str | None,
    device: str,
    precision: str | None,
    macs_per_image: int | None,
    percentiles: Sequence[float],
    peak_tflops: float | None = None,
    enqueue_hint: str = "try --cuda-graph",
) -> CaseResult:
    """Turn raw per-query times into trtexec's summary for one case."""
    if raw.wall_s <= 0 or raw.queries == 0:
        raise DeployError(f"{case.label}: nothing was timed (wall time {raw.wall_s} s, {raw.queries} queries)")
    qps = throughput(raw.queries, raw.wall_s)
    ips = qps * case.batch

    def opt(values: list[float]) -> TimeStats | None:
        return summarize(values, percentiles) if values else None

    latency = summarize(raw.latency_ms, percentiles)
    h2d, compute, d2h, enqueue = (opt(raw.h2d_ms), opt(raw.compute_ms), opt(raw.d2h_ms), opt(raw.enqueue_ms))
    tflops = achieved_tflops(macs_per_image, ips) if macs_per_image is not None else None
    return CaseResult(
        runner=runner,
        backend=backend,
        variant=variant,
        device=device,
        precision=precision,
        batch=case.batch,
        height=case.height,
        width=case.width,
        iterations=raw.iterations,
        queries=raw.queries,
        warmup_iterations=raw.warmup_iterations,
        wall_s=raw.wall_s,
        total_s=raw.total_s,
        queries_per_s=qps,
        images_per_s=ips,
        latency=latency,
        host=summarize(raw.host_ms, percentiles),
        h2d=h2d,
        compute=compute,
        d2h=d2h,
        enqueue=enqueue,
        gmacs=macs_per_image / 1e9 if macs_per_image is not None else None,
        tflops=tflops,
        peak_fraction=peak_fraction(tflops, peak_tflops),
        warnings=diagnose(latency, compute=compute, enqueue=enqueue, h2d=h2d, d2h=d2h, enqueue_hint=enqueue_hint),
    )


#: What to try when the host-side enqueue dominates, per backend.
ENQUEUE_HINTS = {
    "tensorrt": "try --cuda-graph",
    "torch": "try a larger --batch or --compile",
    "onnxruntime": "try a larger --batch",
}


def summarize_target(
    target: BenchTarget,
    runner: Runner,
    raw: RawTimings,
    case: Case,
    *,
    percentiles: Sequence[float],
    peak_tflops: float | None = None,
) -> CaseResult:
    """``summarize_case`` for one case of ``target`` timed on its opened ``runner``: MACs from
    the variant (the feature pyramid for a features model), precision, hint."""
    features = target.kind == "features"
    macs = macs_per_image(target.variant, case.height, case.width, features) if target.variant else None
    model = target.model_path.name if target.model_path else (f"convmlp_{target.variant}" if target.variant else None)
    result = summarize_case(
        raw,
        case,
        runner=runner.name,
        backend=target.backend,
        variant=target.variant,
        device=target.device,
        precision=run_precision(target.precision, getattr(runner, "precision_used", None))
        or getattr(runner, "precision", None),
        macs_per_image=macs,
        percentiles=percentiles,
        peak_tflops=peak_tflops,
        enqueue_hint=ENQUEUE_HINTS.get(target.backend, "try a larger --batch"),
    )
    result.kind = target.kind
    result.model = model
    return result


# --------------------------------------------------------------------------- machine and versions


def machine_line(machine: dict[str, Any], vers: dict[str, str | None]) -> str:
    """One line naming the machine and the versions, for tables and markdown."""
    where = f"{machine.get('cpu')} ({machine.get('usable_cores')}/{machine.get('cores')} cores)"
    if machine.get("gpu"):
        where = f"{machine['gpu']}, {where}"
    vs = ", ".join(f"{k} {v}" for k, v in vers.items() if v)
    return f"{where}; {vs}"


# --------------------------------------------------------------------------- the report

_TEXT_COLUMNS = ("runner", "model", "precision", "kind", "variant", "resolution", "warnings")


def table_columns(
    percentiles: Sequence[str], *, gpu: bool = False, peak: bool = False
) -> list[tuple[str, str]]:
    """(key, header) pairs of the human table; ``percentiles`` are keys like ``p99``."""
    cols = [
        ("runner", "runner"),
        ("model", "model"),
        ("precision", "precision"),
        ("kind", "kind"),
        ("variant", "variant"),
        ("batch", "batch"),
        ("resolution", "resolution"),
        ("gmacs", "GMACs/img"),
        ("qps", "queries/s"),
        ("ips", "images/s"),
        ("min_ms", "min ms"),
        ("mean_ms", "mean ms"),
        ("median_ms", "median ms"),
        ("max_ms", "max ms"),
    ]
    cols += [(f"{p}_ms", f"{p} ms") for p in percentiles]
    cols += [("cv_pct", "CV %"), ("tflops", "TFLOP/s")]
    if peak:
        cols.append(("peak_pct", "% peak"))
    if gpu:
        cols += [("h2d_ms", "H2D ms"), ("compute_ms", "compute ms"), ("d2h_ms", "D2H ms"), ("enqueue_ms", "enqueue ms")]
    cols.append(("warnings", "warnings"))
    return cols


@dataclass
class BenchReport:
    """A sweep's results plus where and how they were taken."""

    machine: dict[str, Any]
    versions: dict[str, str | None]
    settings: dict[str, Any]
    results: list[CaseResult] = field(default_factory=list)

    @property
    def percentile_keys(self) -> list[str]:
        return list(self.results[0].latency.percentiles) if self.results else []

    @property
    def gpu_timed(self) -> bool:
        return any(r.compute is not None for r in self.results)

    @property
    def has_peak(self) -> bool:
        return any(r.peak_fraction is not None for r in self.results)

    def columns(self) -> list[tuple[str, str]]:
        return table_columns(self.percentile_keys, gpu=self.gpu_timed, peak=self.has_peak)

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "versions": self.versions,
            "settings": self.settings,
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        rows = self.rows()
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return buf.getvalue()

    def warning_lines(self) -> list[str]:
        """One markdown bullet per warning of every case."""
        return [
            f"- {r.runner} {r.variant} b{r.batch} {r.height}x{r.width}: {w.message}"
            for r in self.results
            for w in r.warnings
        ]

    def markdown_table(self, columns: Sequence[tuple[str, str]] | None = None) -> str:
        """The results as a GitHub markdown table."""
        cols = list(columns or self.columns())
        lines = ["| " + " | ".join(h for _, h in cols) + " |"]
        lines.append("|" + "|".join("---" if k in _TEXT_COLUMNS else "---:"
                                    for k, _ in cols) + "|")
        for row in self.rows():
            lines.append("| " + " | ".join(_cell(row.get(k)) for k, _ in cols) + " |")
        return "\n".join(lines)

    def to_markdown(self, title: str = "Benchmark") -> str:
        """Title, machine and versions, the table and the warnings."""
        out = [f"## {title}", "", f"Machine: {machine_line(self.machine, self.versions)}", ""]
        timing = self.settings.get("timing") or {}
        if timing:
            out += ["Timing: " + ", ".join(f"{k}={v}" for k, v in timing.items() if v is not None), ""]
        out += [self.markdown_table(), ""]
        notes = [
            f"- {r.runner} {r.variant or ''} b{r.batch} {r.height}x{r.width}: {w.message}"
            for r in self.results
            for w in r.warnings
        ]
        if notes:
            out += ["Warnings:", "", *notes, ""]
        return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    return str(value)


# --------------------------------------------------------------------------- files


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically (temp file in the same folder, then rename)."""

    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)


def plot_report(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Median latency and images/s against pixels per image, one line per (runner, variant, batch)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BackendUnavailable("--plot needs matplotlib: pip install 'convmlp-deploy[plot]'") from None

    series: dict[str, list[CaseResult]] = {}
    for r in report.results:
        series.setdefault(f"{r.label} b{r.batch}", []).append(r)
    # one x position per resolution, ordered by pixels, labelled "224×224"
    sizes = sorted({(r.height, r.width) for r in report.results}, key=lambda hw: (hw[0] * hw[1], hw))
    pos = {hw: i for i, hw in enumerate(sizes)}
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_lat, ax_thr = fig.subplots(1, 2)
    for label, rs in series.items():
        rs = sorted(rs, key=lambda r: pos[(r.height, r.width)])
        xs = [pos[(r.height, r.width)] for r in rs]
        ax_lat.plot(xs, [r.latency.median for r in rs], marker="o", label=label)
        ax_thr.plot(xs, [r.images_per_s for r in rs], marker="o", label=label)
    ax_lat.set(xlabel="resolution (H×W)", ylabel="median latency (ms)", title="Latency")
    ax_thr.set(xlabel="resolution (H×W)", ylabel="images/s", title="Throughput")
    for ax in (ax_lat, ax_thr):
        ax.set_xticks(range(len(sizes)), [f"{h}×{w}" for h, w in sizes])
        ax.grid(True, alpha=0.3)
    ax_thr.legend(fontsize="small")
    fig.suptitle(machine_line(report.machine, report.versions), fontsize="small")

    return atomic_savefig(fig, path)
