"""Top-1/top-5 accuracy on a labelled image set, for several backends side by side on the same images.

Datasets come in the two usual forms:

- ImageFolder: one sub-folder per class; the sorted folder names give the class
  indices (as torchvision and timm do), so ImageNet's synset folders map to the
  checkpoints' 0..999;
- a list file of ``relative/path label_index`` lines (ImageNet val lists), paths
  relative to the data folder.

Images are decoded and preprocessed once, in a thread pool that works on the next
batch while the models run on the current one (Pillow releases the GIL while it
decodes and resizes); every model gets the same batches. Unreadable images are
skipped, counted and named.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convmlp.preprocess import ImageError, ResolutionLike, list_images, load_image, preprocess
from convmlp.weights import PretrainedCfg

from ..api import Model
from ..backends import READS_IR, RunnerOptions, backend, default_backend, precision_choosers
from ..errors import DeployError, OptionError, words
from ..loader import LoadedModel, ModelSource, synthetic_note
from .predict import open_classifier

__all__ = ["DatasetError", "Sample", "Dataset", "load_dataset", "BackendResult", "EvalReport", "evaluate",
           "common_cfg", "batches", "open_rows", "row_names", "evaluate_files"]


class DatasetError(OptionError):
    """The data folder or list file cannot be used (CLI exit 2): the message says why."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass
class Dataset:
    """Labelled images and where they came from."""

    root: Path
    samples: list[Sample]
    form: str  # "folder" or "list"
    classes: list[str] | None = None  # ImageFolder class names, index order

    @property
    def max_label(self) -> int:
        return max(s.label for s in self.samples)


def load_dataset(data: str | os.PathLike[str], labels_file: str | os.PathLike[str] | None = None) -> Dataset:
    """An ImageFolder under ``data``, or the list in ``labels_file`` (paths relative to ``data``).

    Raises ``DatasetError`` for an empty folder, a folder without class folders, a
    malformed or empty list, a negative label, or a listed file that does not exist.
    """
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"--data {root}: not a folder")
    if labels_file is not None:
        return _from_list(root, Path(labels_file))
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = [Sample(img, i) for i, name in enumerate(classes) for img in list_images(root / name)]
    if not samples:
        loose = list_images(root)
        if loose:
            raise DatasetError(
                f"--data {root}: images but no class folders; lay it out as ImageFolder (one folder per class) "
                "or give --labels-file with 'relative/path label' lines"
            )
        raise DatasetError(f"--data {root}: no images in it")
    return Dataset(root, samples, "folder", classes)


def _from_list(root: Path, listing: Path) -> Dataset:
    try:
        text = listing.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"--labels-file {listing}: cannot read it ({exc})") from None
    samples = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"--labels-file {listing}:{n}: expected 'relative/path label_index', got {line.strip()!r}")
        label = int(parts[1])
        if label < 0:
            raise DatasetError(f"--labels-file {listing}:{n}: label {label} is negative")
        path = root / parts[0].strip()
        if not path.is_file():
            raise DatasetError(f"--labels-file {listing}:{n}: {path} does not exist")
        samples.append(Sample(path, label))
    if not samples:
        raise DatasetError(f"--labels-file {listing}: no 'relative/path label_index' lines in it")
    return Dataset(root, samples, "list")


def common_cfg(models: Sequence[Model]) -> PretrainedCfg:
    """The preprocessing every model agrees on; ``DatasetError`` naming the models that differ."""
    keys = ("input_size", "mean", "std", "crop_pct", "interpolation")
    first = models[0].cfg
    for m in models[1:]:
        diff = [k for k in keys if getattr(m.cfg, k) != getattr(first, k)]
        if diff:
            raise DatasetError(
                f"{models[0].source} and {m.source} preprocess differently ({', '.join(diff)}): "
                "evaluate them in separate runs"
            )
    return first


def batches(
    samples: Sequence[Sample], cfg: PretrainedCfg, batch: int, *, resolution: ResolutionLike = None,
    workers: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """``(x, labels, skipped)`` per batch of up to ``batch`` readable images, decoded and preprocessed in a
    thread pool one batch ahead of the caller. ``skipped``: ``"path: why"`` for the batch's unreadable files."""

    def load(s: Sample) -> np.ndarray | str:
        try:
            return preprocess(load_image(s.path), cfg, resolution=resolution)
        except (ImageError, OSError, ValueError) as exc:
            return f"{s.path}: {exc}"

    chunks = [samples[i:i + batch] for i in range(0, len(samples), batch)]
    with ThreadPoolExecutor(max_workers=workers or min(4, (os.cpu_count() or 1) + 1)) as pool:
        pending = [pool.submit(load, s) for s in chunks[0]] if chunks else []
        for i, chunk in enumerate(chunks):
            done = [f.result() for f in pending]
            pending = [pool.submit(load, s) for s in chunks[i + 1]] if i + 1 < len(chunks) else []
            ok = [(x, s.label) for x, s in zip(done, chunk, strict=True) if not isinstance(x, str)]
            skipped = [x for x in done if isinstance(x, str)]
            if ok:
                yield np.concatenate([x for x, _ in ok]), np.array([lab for _, lab in ok]), skipped
            else:
                yield np.zeros((0, 3, 1, 1), np.float32), np.zeros(0, int), skipped


@dataclass
class BackendResult:
    """Accuracy and speed of one model on the evaluated images."""

    name: str
    source: str
    backend: str
    runner: str
    precision: str | None
    images: int = 0
    top1: float = 0.0
    top5: float = 0.0
    seconds: float = 0.0
    top1_vs_reference: float | None = None  # accuracy difference from the PyTorch FP32 row, points
    agreement: float | None = None  # fraction of images whose top-1 equals PyTorch FP32's
    predictions: list[int] = field(default_factory=list, repr=False)

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("predictions")
        d["images_per_s"] = self.images_per_s
        return d


@dataclass
class EvalReport:
    dataset: str
    form: str
    images: int
    skipped: list[str]
    results: list[BackendResult]
    reference: str | None  # name of the PyTorch FP32 row the others are compared with

    def rows(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "form": self.form, "images": self.images, "skipped": len(self.skipped),
                "skipped_files": list(self.skipped), "reference": self.reference, "results": self.rows()}


def row_names(models: Sequence[LoadedModel | Model]) -> list[str]:
    """``file on backend`` per row; where two files share a name, as many parent folders as tell them apart."""
    def name(m: LoadedModel | Model, depth: int) -> str:
        path = m.facts.path
        if path is None:
            return f"{m.facts.name} on {m.backend}"
        parts = path.parts[-depth - 1:]
        return f"{'/'.join(parts)} on {m.backend}"

    depth = 0
    names = [name(m, depth) for m in models]
    while len(set(names)) < len(names) and depth < max((len(m.facts.path.parts) for m in models if m.facts.path),
                                                        default=0):
        depth += 1
        names = [name(m, depth) for m in models]
    return names


def evaluate(
    models: Sequence[Model],
    dataset: Dataset,
    *,
    batch: int = 32,
    limit: int | None = None,
    resolution: ResolutionLike = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Run every model (``deploy.api.Model``) on the same batches; top-1/top-5 per model.

    The first PyTorch FP32 model, if any, is the reference for differences and agreement.
    Raises ``DatasetError`` for labels beyond a model's classes, ``DeployError`` when no image is readable.
    """
    if not models:
        raise ValueError("no model to evaluate")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    samples = dataset.samples[:limit] if limit else dataset.samples
    for m in models:
        if dataset.max_label >= m.num_classes:
            raise DatasetError(
                f"label {dataset.max_label} is out of range for {m.source} ({m.num_classes} classes)"
            )
    cfg = common_cfg(models)
    results = [BackendResult(n, m.source, m.backend, m.runner_name, m.precision)
               for n, m in zip(row_names(models), models, strict=True)]
    hits1 = [0] * len(models)
    hits5 = [0] * len(models)
    skipped: list[str] = []
    seen = 0
    for x, labels, bad in batches(samples, cfg, batch, resolution=resolution):
        skipped += bad
        if len(labels):
            for i, m in enumerate(models):
                t0 = time.perf_counter()
                logits = m(x)
                results[i].seconds += time.perf_counter() - t0
                top5 = np.argsort(-logits, axis=1)[:, :5]
                hits1[i] += int((top5[:, 0] == labels).sum())
                hits5[i] += int((top5 == labels[:, None]).any(axis=1).sum())
                results[i].predictions += top5[:, 0].tolist()
            seen += len(labels)
        if progress is not None:
            progress(seen + len(skipped), len(samples))
    if seen == 0:
        raise DeployError(f"none of the {len(samples)} images could be read (first: {skipped[0] if skipped else '-'})")
    for i, r in enumerate(results):
        r.images, r.top1, r.top5 = seen, hits1[i] / seen, hits5[i] / seen
    ref = next((r for r, m in zip(results, models, strict=True)
                if m.facts.format == "pytorch" and r.precision in (None, "fp32")), None)
    if ref is not None:
        base = np.array(ref.predictions)
        for r in results:
            r.top1_vs_reference = 100.0 * (r.top1 - ref.top1)
            r.agreement = float((np.array(r.predictions) == base).mean())
    return EvalReport(str(dataset.root), dataset.form, seen, skipped, results, ref.name if ref else None)


def _check_backends(sources: Sequence[ModelSource], backends: Sequence[str]) -> None:
    if backends and not any(src.reads == "onnx" for src in sources):
        raise OptionError("--onnx-backend goes with --onnx (as --backend: a variant or an engine runs on its own)")


def open_rows(
    sources: Sequence[ModelSource], *, backends: Sequence[str] = (), options: RunnerOptions | None = None,
    on_note: Callable[[str], None] | None = None,
) -> list[LoadedModel]:
    """One classifier per row: a variant on PyTorch, each graph on each of ``backends`` (default: the one
    it runs on), each engine on TensorRT. ``options.precision`` goes to the backends that choose precision
    at run time (OpenVINO). Refused before any image is read (``OptionError``): a features model, a
    backend that runs no graph, rows whose class counts differ."""
    options = options or RunnerOptions()
    _check_backends(sources, backends)
    rows: list[LoadedModel] = []
    for src in sources:
        names = backends if src.reads == "onnx" and backends else (default_backend(src.reads, src.path),)
        for name in names:
            b = backend(name)  # what it reads and takes is checked once, by the loader (open_classifier)
            if _cannot_run(src, name, names):  # an IR among graphs on several backends: skip that pair only
                if on_note is not None:
                    on_note(f"{src.path.name} on {name}: skipped (an OpenVINO IR runs on {' or '.join(READS_IR)})")
                continue
            # run-time precision is a file's: the PyTorch row is the FP32 reference
            opts = options if b.precisions and src.reads != "variant" else options.with_(precision=None)
            rows.append(open_classifier(src, backend_name=name, options=opts, purpose="evaluate"))
    if options.precision is not None and not any(backend(m.backend).precisions and m.facts.path for m in rows):
        raise OptionError(f"--precision {options.precision} applies to rows on --backend "
                          f"{words(precision_choosers('onnx'), 'or')}; "
                          "the other backends run the precision their file carries")
    counts = {m.num_classes for m in rows}
    if len(counts) > 1:
        listed = ", ".join(f"{n} ({m.num_classes} classes)" for n, m in zip(row_names(rows), rows, strict=True))
        raise OptionError(f"the rows classify into different class counts: {listed}; evaluate one model's "
                          "files together (for a fine-tuned graph, give --variant the --weights it was exported from)")
    return rows


def _cannot_run(src: ModelSource, name: str, names: Sequence[str]) -> bool:
    """An IR asked of a backend that reads no IR, where another of ``names`` runs it (evaluate the rest)."""
    from ..modelfile import is_ir

    return (src.path is not None and is_ir(src.path) and name not in READS_IR
            and any(n in READS_IR for n in names))


def evaluate_files(
    data: str | os.PathLike[str],
    sources: Sequence[ModelSource],
    *,
    labels_file: str | os.PathLike[str] | None = None,
    backends: Sequence[str] = (),
    options: RunnerOptions | None = None,
    batch: int = 32,
    limit: int | None = None,
    resolution: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> EvalReport:
    """``evaluate``: the data set, one row per model (``open_rows``), all on the same images."""
    from contextlib import ExitStack

    from ..resources import check_fits

    if not sources:
        raise OptionError("nothing to evaluate: give --variant, --onnx PATH or --engine PATH")
    _check_backends(sources, backends)
    dataset = load_dataset(data, labels_file)
    if resolution is not None:
        check_fits(next((s.variant for s in sources if s.variant), None), [(batch, *resolution)])
    models = open_rows(sources, backends=backends, options=options, on_note=on_note)
    notes = list(dict.fromkeys(n for m in models for n in m.notes))
    synthetic = list(dict.fromkeys(m.facts.name for m in models if m.facts.synthetic))
    if synthetic:
        notes.append(synthetic_note(synthetic))
    for note in notes:
        if on_note is not None:
            on_note(note)
    with ExitStack() as stack:
        rows = [stack.enter_context(Model(m)) for m in models]
        return evaluate(rows, dataset, batch=batch, limit=limit, resolution=resolution, progress=progress)
