"""What ``tune`` writes: the best candidate as a ``deploy.deployconfig.DeployConfig``, every candidate as
CSV rows, and a plot of latency against accuracy with the chosen point marked."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ...artifacts import atomic_savefig
from ...backends import BACKENDS
from ...deployconfig import DeployConfig, ModelFile, machine_facts
from ...errors import BackendUnavailable
from .search import ETA, MARGIN, ROUNDS, WIN_ROUNDS

__all__ = ["COLUMNS", "build_config", "trials_csv", "plot_trials"]

#: the table of every candidate (terminal, CSV): (key, header)
COLUMNS = [
    ("index", "#"), ("model", "model"), ("backend", "backend"), ("computes", "computes"), ("threads", "threads"),
    ("streams", "streams"), ("batch", "batch"), ("policy", "shapes"), ("gate", "gate"), ("rel_l2", "rel L2"),
    ("cosine", "cosine"), ("top1_agreement", "top-1 agr"), ("p50_ms", "p50 ms"), ("size_p50_ms", "per-size p50"),
    ("p99_ms", "p99 ms"),
    ("images_per_s", "images/s"), ("ms_per_mpx", "ms/Mpx"), ("vs_best", "vs best"), ("status", "status"),
]


def build_config(result: Any, *, partial: bool | None = None) -> DeployConfig:
    """The best trial of ``result`` (a ``TuneResult``) as the deployment to write."""
    search, req = result.search, result.request
    best = search.best
    c = best.candidate
    m = c.model
    files = []
    if m.path is None:
        files.append(ModelFile("model", None, None, "pytorch", c.computes))
        if m.weights is not None:
            files.append(ModelFile("weights", str(m.weights), m.sha256, "checkpoint"))
    else:
        files.append(ModelFile("model", str(m.path), m.sha256, m.facts.format, m.facts.precision))
    f = best.figures
    batch = c.batch
    delay = 0 if batch == 1 or req.objective == "latency" or f is None else int(round(f.p50_ms * 1000))
    policy = {**c.policy.to_dict(), "searched": "shapes" in BACKENDS[c.backend].takes}
    gate = best.gate.to_dict() if best.gate else {}
    measured: dict[str, Any] = {
        "workload": result.workload.to_dict(), "objective": req.objective,
        **(f.to_dict() if f is not None else {}),
        "rounds": ROUNDS, "passes_per_round": best.passes, "alone": best.alone, "timed_in": best.timed_in or None,
        "processes": len(best.processes) or None, "process_p50_ms": [p.p50_ms for p in best.processes] or None,
        "process_size_p50_ms": [p.size_p50_ms for p in best.processes] or None,
        "process_images_per_s": [p.images_per_s for p in best.processes] or None,
        "how": (f"timed alone after the search in {best.timed_in}, the median process's figures: runners opened "
                f"fresh, {ROUNDS} rounds of {best.passes} pass(es) over the workload in each (as 'benchmark --config' "
                "times it); " if best.alone else
                "from its last comparison (the budget left no room to time it alone); ") +
               f"ranked interleaved against the best in {ROUNDS} alternating rounds per comparison; crowned at a median "
               f"ratio >= {1 + MARGIN:g} winning >= {WIN_ROUNDS:.0%} of rounds",
    }
    return DeployConfig(
        backend=c.backend, files=tuple(files), precision=c.precision,
        computes=best.gate.computes if best.gate else c.computes, threads=c.threads, streams=c.streams,
        batching={"batch": batch, "max_batch": batch, "max_queue_delay_us": delay},
        shape_policy=policy, variant=m.facts.variant, device=c.options(exact=True).device,
        cuda_graph=c.cuda_graph, measured=measured,
        gate={**gate, "set": result.gate_set, "min_top1_agreement": req.min_top1_agreement},
        machine=machine_facts(), partial=search.stopped == "interrupted" if partial is None else partial,
        search={"coverage": search.coverage(), "space": result.space.to_dict(), "budget_s": req.budget_s,
                "pruning": f"successive halving, eta {ETA}, queries doubling per rung",
                "max_p99_ms": req.max_p99_ms},
    )


def trials_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k, _ in COLUMNS], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k, _ in COLUMNS})
    return buf.getvalue()


def plot_trials(result: Any, path: str | os.PathLike[str]) -> Path:
    """p50 latency against relative L2 error of every timed candidate, the chosen one marked."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BackendUnavailable("--plot needs matplotlib: pip install 'convmlp-deploy[plot]'") from None
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    best = result.search.best
    for t in result.search.trials:
        if t.figures is None or t.gate is None:
            continue
        err = t.gate.metric("rel_l2") or 1e-9
        chosen = t is best
        ax.scatter([err], [t.figures.p50_ms], marker="*" if chosen else "o", s=200 if chosen else 30,
                   color="crimson" if chosen else "tab:blue", zorder=3 if chosen else 2)
        if chosen:
            ax.annotate(f"chosen: {t.candidate.label}", (err, t.figures.p50_ms), fontsize="small", ha="right",
                        xytext=(-8, 8), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="relative L2 error vs PyTorch FP32 on the gate set (PyTorch: 1e-9)",
           ylabel="p50 latency (ms)",
           title=f"tune: {result.workload.spec}, {result.gate_set}")
    ax.grid(True, alpha=0.3)
    return atomic_savefig(fig, path)
