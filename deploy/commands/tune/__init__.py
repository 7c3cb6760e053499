"""``tune``: the fastest deployment whose accuracy gate holds, on the machine at hand.

``run_tune(request)`` is the command's one call:

1. the model: ``--onnx`` files (the FP32 graph required; FP16/INT8 graphs and IRs optional, each read
   with ``deploy.modelfile.describe``) or ``--variant`` (+ ``--weights``), exported with the export
   library (``TuneRequest.export``, given by the CLI) into a folder beside ``-o`` (the FP32 graph; the INT8
   CPU-layout graph with ``--calibration``);
2. the reference cases the gates hold on: the user's held-out images (``--images``, at least
   ``MIN_IMAGES``) with PyTorch FP32's outputs at the recorded size and their own (``deploy.reference.photo_cases``), or the synthetic grid
   at the workload's sizes (``--gate grid``, said in the output);
3. the space (``space.build_space``: every backend and precision this machine runs, x threads x streams
   x batch x shape policy; with TensorRT, engines from ``trt.build_engines``), and what was left out;
4. the search (``search.Search``: gate first, successive halving, interleaved timing, the budget), its
   best then timed alone in fresh processes (``fresh_timing``; ``remeasure.in_fresh_processes``);
5. the result: every candidate's row, and the best as a ``deploy.deployconfig.DeployConfig``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convmlp.weights import file_sha256

from ...backends import BACKENDS
from ...errors import OptionError
from ...modelfile import describe, describe_variant
from ...reference import ReferenceCase, photo_cases, reference_cases
from .figures import OBJECTIVE_FIGURE, unsteady_note
from .output import COLUMNS, build_config, plot_trials, trials_csv
from .search import ROUNDS, AloneTiming, Search, SearchResult, Trial
from .space import ModelChoice, Space, build_space
from .workload import Workload, parse_workload

__all__ = ["MIN_IMAGES", "OBJECTIVES", "GATES", "TuneRequest", "TuneResult", "minimum_budget_s", "prepare",
           "run_tune", "COLUMNS", "trials_csv", "plot_trials", "parse_workload"]

#: held-out images at least: with fewer, one image moves the top-1 agreement by more than 12.5 points,
#: coarser than the margin between the gates (BF16 75%, INT8 60%)
MIN_IMAGES = 8
#: held-out images used at most (as ``validate --images``)
MAX_IMAGES = 64
OBJECTIVES = ("latency", "throughput")
GATES = ("images", "grid")
#: an optimistic speed (multiply-accumulates per second) for the one check made before any work: whether
#: the budget can hold even one candidate; set above what the fastest CPU measured here reaches, so that
#: only budgets that cannot work are refused
OPTIMISTIC_MACS_PER_S = 4e11
#: fixed costs of one candidate that do not scale with the model: the PyTorch reference and one session
FIXED_S = 1.5


@dataclass
class TuneRequest:
    onnx: Sequence[Path] = ()
    variant: str | None = None
    weights: Path | None = None
    calibration: Path | None = None
    images: Path | None = None
    gate: str = "images"
    shapes: str = "224"
    batches: Sequence[int] = (1,)
    objective: str = "latency"
    max_p99_ms: float | None = None
    min_top1_agreement: float | None = None
    budget_s: float = 300.0
    output: Path = Path("deploy.json")
    #: where ``--variant`` exports its graphs and TensorRT engines are built [default: beside ``output``]
    work_dir: Path | None = None
    cores: int | None = None
    #: ``--variant``: writes the graphs to search over into ``folder`` and returns their paths
    export: Callable[[TuneRequest], list[Path]] | None = None
    #: the clock the budget is kept by
    clock: Callable[[], float] = time.monotonic
    on_progress: Callable[[Search], None] | None = None
    log: Callable[[str], None] = lambda _msg: None

    @property
    def folder(self) -> Path:
        return self.work_dir or self.output.parent / f"{self.output.stem}.models"


@dataclass
class TuneResult:
    request: TuneRequest
    space: Space
    search: SearchResult
    workload: Workload
    gate_set: str
    models: list[ModelChoice]
    notes: list[str] = field(default_factory=list)
    config: Any = None  # DeployConfig of the best, None when nothing passed

    @property
    def failure(self) -> str | None:
        """Why nothing can be deployed (exit 3): every gate failed, or no candidate met ``--max-p99-ms``."""
        best = self.search.best
        gated = [t for t in self.search.trials if t.gate is not None]
        if best is None and gated and all(not t.gate.passed for t in gated) and self.search.stopped == "done":
            return (f"every candidate failed its accuracy gate on the {self.gate_set} (the table says which "
                    "gate and by how much)")
        limit = self.request.max_p99_ms
        if best is not None and limit is not None and best.figures is not None and best.figures.p99_ms > limit:
            return f"no candidate met --max-p99-ms {limit:g} (the fastest p99 was {best.figures.p99_ms:.3g} ms)"
        return None

    def rows(self) -> list[dict[str, Any]]:
        return [t.row() for t in self.search.trials]

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.config.to_dict() if self.config is not None else None,
            "coverage": self.search.coverage(), "coverage_line": self.search.coverage_line(),
            "space": self.space.to_dict(), "workload": self.workload.to_dict(), "gate_set": self.gate_set,
            "objective": self.request.objective, "notes": list(self.notes), "candidates": self.rows(),
        }


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def minimum_budget_s(variant: str, images: int, workload: Workload, batch: int) -> float:
    """What one candidate costs at least (reference + gate on ``images``, one timed round per size), at an
    optimistic speed: a budget below it cannot hold one candidate."""
    from ..bench.targets import macs_per_image

    photo = macs_per_image(variant, 224, 224)
    stream = sum(macs_per_image(variant, h, w) for h, w in workload.sizes) * batch
    return FIXED_S + (2 * images * photo + 2 * stream) / OPTIMISTIC_MACS_PER_S


def _check_request(r: TuneRequest) -> None:
    if r.objective not in OBJECTIVES:
        raise OptionError(f"--objective must be {' or '.join(OBJECTIVES)}, not {r.objective!r}")
    if r.gate not in GATES:
        raise OptionError(f"--gate must be {' or '.join(GATES)}, not {r.gate!r}")
    if not r.onnx and not r.variant:
        raise OptionError("give the model: --onnx P (the FP32 graph, and any FP16/INT8 graphs or IRs) or --variant")
    if r.calibration is not None and not r.variant:
        raise OptionError("--calibration goes with --variant (it calibrates the INT8 graph tune exports)")
    if r.onnx and r.variant and r.calibration is not None:
        raise OptionError("give --onnx graphs or --variant to export, not both with --calibration")
    if r.min_top1_agreement is not None and not 0.0 <= r.min_top1_agreement <= 1.0:
        raise OptionError(f"--min-top1-agreement must be within 0..1, got {r.min_top1_agreement}")
    if r.gate == "images" and r.images is None:
        raise OptionError(f"tune gates accuracy on your held-out images: give --images DIR with at least {MIN_IMAGES} "
                          "images (the top-1 agreement of each precision is measured on them), or --gate grid to "
                          "accept the synthetic grid")


def _photos(r: TuneRequest) -> list[Path]:
    if r.gate != "images":
        return []
    from convmlp.preprocess import list_images

    assert r.images is not None
    found = list_images(r.images)
    if len(found) < MIN_IMAGES:
        raise OptionError(f"--images {r.images}: {len(found)} image(s), tune needs at least {MIN_IMAGES}: with fewer, "
                          f"one image moves the top-1 agreement by more than {100 / MIN_IMAGES:.1f} points, coarser "
                          "than the gates (75% BF16, 60% INT8); add images or give --gate grid")
    return found[:MAX_IMAGES]


def _describe_files(r: TuneRequest) -> list[ModelChoice]:
    models = []
    for p in r.onnx:
        facts = describe(p, "onnx")
        facts.require_classifier("tune")
        models.append(ModelChoice(facts, file_sha256(p), Path(p)))
    fp32 = [m for m in models if m.facts.precision == "fp32" and m.facts.format == "onnx"]
    if not fp32:
        raise OptionError("tune needs the FP32 ONNX graph among --onnx (convmlp_{v}.onnx from 'export'): it is the "
                          "search's first incumbent; add it")
    classes = {m.facts.num_classes for m in models}
    if len(classes) > 1:
        raise OptionError(f"the --onnx graphs are of different models ({', '.join(map(str, sorted(classes)))} "
                          "classes): give the graphs of one export")
    return models


def _export(r: TuneRequest) -> list[ModelChoice]:
    """``--variant``: the graphs ``r.export`` writes into ``r.folder`` (the CLI passes the export library's
    pipeline), and the PyTorch variant itself."""
    assert r.variant is not None
    if r.export is None:
        raise OptionError("--variant needs an exporter here: give the --onnx graphs 'export' wrote")
    r.log(f"exporting convmlp_{r.variant} into {r.folder} ...")
    models = []
    for path in r.export(r):
        models.append(ModelChoice(describe(path, "onnx"), file_sha256(path), Path(path)))
    facts = describe_variant(r.variant, weights=r.weights)
    models.append(ModelChoice(facts, file_sha256(r.weights) if r.weights else None, None, r.weights))
    return models


def prepare(r: TuneRequest) -> tuple[Workload, list[Path], float]:
    """Everything checked before any work: the request, the workload, the images, the budget floor."""
    _check_request(r)
    workload = parse_workload(r.shapes)
    photos = _photos(r)
    variant = r.variant
    if variant is None:
        facts = describe(r.onnx[0], "onnx")
        variant = facts.variant or "s"
    floor = minimum_budget_s(variant, len(photos) or 4, workload, max(r.batches))
    if r.budget_s < floor:
        raise OptionError(f"--budget-s {r.budget_s:g} cannot hold one candidate: gating it on {len(photos) or 'the'} "
                          f"image(s) and timing one round of {workload.spec} needs at least ~{floor:.1f} s even on a "
                          f"fast CPU; give --budget-s {max(30, round(floor * 10))} or more")
    return workload, photos, floor


def _reference(r: TuneRequest, models: list[ModelChoice], photos: list[Path],
               workload: Workload) -> tuple[list[ReferenceCase], str, str, str]:
    from ..validate import reference_for

    first = next(m for m in models if m.path is not None and m.facts.precision == "fp32")
    model = reference_for(first.facts, r.variant, r.weights)
    names = first.facts.output_names
    if photos:
        cases = photo_cases(model, photos, first.facts.preprocessing, output_names=names,
                               what=f"the images in --images {r.images}")
        gate_set = f"held-out images ({cases[0].shape[0]})"
    else:
        shapes = [(1, 3, h, w) for h, w in workload.distinct[:3]]
        shapes.append((2, 3, *workload.sizes[0]))
        cases = reference_cases(model, shapes, output_names=names)
        gate_set = "synthetic grid (" + ", ".join("x".join(map(str, s)) for s in shapes) + ")"
    return cases, gate_set, f"convmlp_{model.variant}", model.weights_source


def _engines(models: list[ModelChoice], workload: Workload, r: TuneRequest) -> list[ModelChoice]:
    """TensorRT engines to search over, where a backend that reads engines runs here (``trt``)."""
    from ...backends import RunnerOptions
    from ...errors import BackendUnavailable

    readers = [b for b in BACKENDS.values() if b.reads == "engine"]
    for b in readers:
        try:
            b.check_here(RunnerOptions(device=b.devices[0]))
        except (BackendUnavailable, OptionError):
            continue  # build_space says why it is left out
        from .trt import build_engines

        return build_engines(models, workload, r.batches, r.folder / "engines", log=r.log)
    return []


def fresh_timing(r: TuneRequest, space: Space, workload: Workload, gate_set: str, models: list[ModelChoice],
                 search: Callable[[], Search]) -> AloneTiming:
    """The best timed alone in ``remeasure.PROCESSES`` processes of their own: the deployment ``deploy.json``
    will record, timed as ``benchmark --config`` times it."""
    from .remeasure import FRESH_START_S, PROCESSES, in_fresh_processes

    def alone(trial: Trial, passes: int) -> Any:
        s = search()
        provisional = TuneResult(r, space, SearchResult(s.trials, trial, "done", s.elapsed(), s.rungs), workload,
                                 gate_set, models)
        left = max(r.budget_s - s.elapsed(), 0.0)
        return in_fresh_processes(build_config(provisional, partial=False), processes=PROCESSES, rounds=ROUNDS,
                                  passes=passes, timeout_s=max(3 * left, 120.0))

    return AloneTiming(alone, FRESH_START_S, f"{PROCESSES} fresh processes", PROCESSES)


def run_tune(r: TuneRequest) -> TuneResult:
    """Tune (module docstring). Raises ``OptionError`` for a request that cannot work (before any work)."""
    workload, photos, _ = prepare(r)
    notes = []
    if r.variant and not r.onnx:
        if r.weights is None:
            notes.append(f"--variant {r.variant} without --weights: synthetic weights (classes mean nothing; the "
                         "gates and speeds still hold for the architecture)")
        models = _export(r)
    else:
        models = _describe_files(r)
    if r.gate == "grid":
        notes.append("--gate grid: the accuracy gates are measured on the synthetic grid, not on your images "
                     "(no top-1 agreement gate)")
    models = models + _engines(models, workload, r)
    space = build_space(models, batches=r.batches, objective=r.objective, cores=r.cores or _cores(),
                        workload=workload, variant_mode=bool(r.variant and not r.onnx))
    if not space.candidates:
        raise OptionError("nothing to search on this machine: " + "; ".join(space.left_out))
    cases, gate_set, label, weights = _reference(r, models, photos, workload)
    alone = fresh_timing(r, space, workload, gate_set, models, lambda: search)
    search = Search(space, cases, workload, objective=r.objective, budget_s=r.budget_s, max_p99_ms=r.max_p99_ms,
                    min_top1_agreement=r.min_top1_agreement, on_progress=r.on_progress, model_label=label, clock=r.clock,
                    weights_label=weights, alone=alone)
    result = search.run()
    if result.best is not None:
        note = unsteady_note(result.best.processes, OBJECTIVE_FIGURE.get(r.objective, "size_p50_ms"),
                             "the best's timing")
        notes += [note] if note else []
    out = TuneResult(r, space, result, workload, gate_set, models, notes)
    if result.best is not None and out.failure is None:
        out.config = build_config(out)
    return out
