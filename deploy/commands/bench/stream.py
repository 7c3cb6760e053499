"""``benchmark --shapes``: a stream of input sizes, as a service sees them, not a batch x resolution grid.

ConvMLP takes any input of 32x32 or more, so what a deployment costs depends on the sizes it is sent:
how fast it answers a size it has never seen (a first sight: an executable compiled on the request
path, or the generic one), and how much each megapixel costs once it has. A stream is

- ``random:LO-HI``: height and width each uniform in [LO, HI] (a seeded draw: the same seed, the same
  sizes), the batch ``--batch``;
- ``cycle:224,320x480,2x512``: the sizes in turn;
- a file (``--shapes-file``): one size per line (``N``, ``HxW`` or ``BxHxW``; ``#`` starts a comment),
  in turn.

A fixed reference size (224x224 by default) is measured in the same run, its requests interleaved with
the stream's (``S R``, ``R S``, ``S R``... so that whatever slows the machine for a while slows both
alike), after a warm-up on the reference alone. The report gives, for the stream and the reference,
p50/p90/p99/max latency and ms per megapixel (total time over total megapixels), their ratio, the
latency of first sights (sizes the runner had not been sent before in this run, the reference counted
as sent by the warm-up), and what the runner says of its specialisations (``shape_stats()``: count,
cache bytes, policy), which a served model keeps to itself.

Every request is timed the same way on every backend: the host clock from ``load_input`` to ``fetch``,
synchronised, one request at a time (what a caller waits for).

    >>> from deploy.commands.bench.stream import parse_stream, plan_stream, run_stream
    >>> from deploy.loader import ModelSource
    >>> spec = parse_stream("random:64-512", requests=200, seed=1)
    >>> report = run_stream(plan_stream(ModelSource(onnx="convmlp_s.onnx"), spec))
    >>> print(report.to_markdown())
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import OptionError
from ...loader import ModelSource
from ...machine import machine_info, versions
from ...runners.base import Runner
from ...shapes import MIN_SIDE, format_size, parse_size
from .report import machine_line
from .stats import percentile
from .targets import BenchTarget
from .timing import Case, Clock, make_inputs

__all__ = [
    "DEFAULT_REQUESTS",
    "DEFAULT_REFERENCE",
    "StreamSpec",
    "parse_stream",
    "read_shapes_file",
    "parse_reference",
    "StreamPlan",
    "plan_stream",
    "StreamRequest",
    "Series",
    "StreamReport",
    "run_stream",
]

#: (batch, height, width)
Size = tuple[int, int, int]

#: requests of a ``random:`` or ``cycle:`` stream when ``--requests`` is not given (a file: each line once)
DEFAULT_REQUESTS = 100
DEFAULT_REFERENCE = "224"
KINDS = ("random", "cycle", "file")

_FORMS = ("give random:LO-HI (e.g. random:64-512), cycle:SIZE,SIZE,... (e.g. cycle:224,320x480,2x512), "
          "or a file of sizes with --shapes-file")


# --------------------------------------------------------------------------- what to send


@dataclass(frozen=True)
class StreamSpec:
    """Which sizes to send, as parsed from the command line: drawn (``random``), or a list in turn
    (``cycle``, ``file``). ``requests`` None: ``DEFAULT_REQUESTS``, or each line of a file once."""

    kind: str
    text: str
    sizes: tuple[Size, ...] = ()
    low: int = 0
    high: int = 0
    batch: int = 1
    requests: int | None = None
    seed: int = 0
    reference: Size = (1, 224, 224)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OptionError(f"stream kind {self.kind!r}: choose {', '.join(KINDS)}")
        if self.requests is not None and self.requests < 1:
            raise OptionError(f"--requests must be >= 1, got {self.requests}")
        if self.kind != "random" and not self.sizes:
            raise OptionError(f"{self.text!r} holds no size")

    @property
    def count(self) -> int:
        """How many stream requests will be sent."""
        if self.requests is not None:
            return self.requests
        return len(self.sizes) if self.kind == "file" else DEFAULT_REQUESTS

    def draw(self) -> list[Size]:
        """The sizes of the stream, in the order they are sent (the same for the same spec and seed)."""
        if self.kind == "random":
            hw = np.random.default_rng(self.seed).integers(self.low, self.high + 1, size=(self.count, 2))
            return [(self.batch, int(h), int(w)) for h, w in hw]
        return [self.sizes[i % len(self.sizes)] for i in range(self.count)]

    def describe(self) -> str:
        seed = f", seed {self.seed}" if self.kind == "random" else ""
        return f"{self.text} ({self.count} requests{seed})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "spec": self.text, "requests": self.count, "seed": self.seed, "batch": self.batch,
            "range": [self.low, self.high] if self.kind == "random" else None,
            "sizes": [list(s) for s in self.sizes] if self.kind != "random" else None,
            "reference": list(self.reference),
        }


def _size(text: str, batch: int, option: str) -> Size:
    """``parse_size``; a size written without a batch (``224``, ``320x480``) takes ``batch``."""
    b, h, w = parse_size(text, option=option)
    parts = str(text).strip().lower().split("x")
    explicit = len(parts) == 3 or (len(parts) == 2 and int(parts[0]) < MIN_SIDE)
    return (b if explicit else batch, h, w)


def parse_reference(text: str | None, *, batch: int = 1) -> Size:
    """``--reference-size`` (default 224), at ``batch`` unless it names its own."""
    return _size(DEFAULT_REFERENCE if text is None else text, batch, "--reference-size")


def parse_stream(
    text: str, *, batch: int = 1, requests: int | None = None, seed: int = 0, reference: str | None = None
) -> StreamSpec:
    """``random:LO-HI`` or ``cycle:SIZE,SIZE,...`` (``--shapes``); ``OptionError`` (exit 2) otherwise."""
    t = str(text).strip()
    kind, _, rest = t.partition(":")
    kind = kind.strip().lower()
    ref = parse_reference(reference, batch=batch)
    if kind == "random":
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", rest)
        if not m:
            raise OptionError(f"--shapes {text!r}: give the range of sides as random:LO-HI (e.g. random:64-512)")
        low, high = int(m.group(1)), int(m.group(2))
        if low < MIN_SIDE:
            raise OptionError(f"--shapes {text!r}: sides must be >= {MIN_SIDE}")
        if low > high:
            raise OptionError(f"--shapes {text!r}: the range is empty ({low} > {high}); give random:LO-HI with LO <= HI")
        return StreamSpec("random", t, low=low, high=high, batch=batch, requests=requests, seed=seed, reference=ref)
    if kind == "cycle":
        items = [w for w in rest.replace(" ", ",").split(",") if w]
        if not items:
            raise OptionError(f"--shapes {text!r}: list the sizes, as cycle:224,320x480,2x512")
        sizes = tuple(_size(w, batch, f"--shapes {t!r}: size") for w in items)
        return StreamSpec("cycle", t, sizes=sizes, batch=batch, requests=requests, seed=seed, reference=ref)
    raise OptionError(f"--shapes {text!r}: {_FORMS}")


def read_shapes_file(
    path: str | Path, *, batch: int = 1, requests: int | None = None, seed: int = 0, reference: str | None = None
) -> StreamSpec:
    """The sizes of ``--shapes-file``: one a line (``N``, ``HxW``, ``BxHxW``), ``#`` comments and blank lines
    skipped. ``OptionError`` (exit 2) for a missing, empty or malformed file, naming the line."""
    p = Path(path)
    if not p.exists():
        raise OptionError(f"--shapes-file {path}: no such file")
    if p.is_dir():
        raise OptionError(f"--shapes-file {path} is a folder; give a file of sizes")
    try:
        lines = p.read_text().splitlines()
    except UnicodeDecodeError:
        raise OptionError(f"--shapes-file {path} is not a text file of sizes") from None
    sizes: list[Size] = []
    for n, line in enumerate(lines, 1):
        word = line.split("#", 1)[0].strip()
        if word:
            sizes.append(_size(word, batch, f"--shapes-file {path} line {n}:"))
    if not sizes:
        raise OptionError(f"--shapes-file {path} holds no size (one a line: N, HxW or BxHxW; # starts a comment)")
    return StreamSpec("file", str(path), sizes=tuple(sizes), batch=batch, requests=requests, seed=seed,
                      reference=parse_reference(reference, batch=batch))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class StreamPlan:
    """A checked stream: the sizes drawn, and the model file's target or a served model."""

    spec: StreamSpec
    sizes: tuple[Size, ...]
    target: BenchTarget | None = None
    endpoint: Any = None  # deploy.runners.endpoint.Endpoint
    warmup_s: float = 0.2


def plan_stream(
    source: ModelSource | None,
    spec: StreamSpec,
    *,
    endpoint: tuple[str, str, str] | None = None,
    warmup_s: float = 0.2,
    **runner_choices: Any,
) -> StreamPlan:
    """Draw the stream and make every check before work: the target as ``plan_benchmark`` resolves it from
    ``source`` and ``runner_choices`` (passed to it unchanged: backend, options, device...), then every size
    of the stream and the reference against the model file and this machine (``prepare``). With
    ``endpoint`` (url, model, protocol): the served model's description and its batch limit instead."""
    from . import plan_benchmark, prepare

    if warmup_s < 0:
        raise OptionError(f"warm-up must be >= 0 ms, got {warmup_s * 1e3:g}")
    sizes = tuple(spec.draw())
    if endpoint is not None:
        from ...runners.endpoint import describe_endpoint

        served = describe_endpoint(*endpoint)
        largest = max(s[0] for s in (*sizes, spec.reference))
        if served.max_batch and largest > served.max_batch:
            raise OptionError(f"batch {largest} is above {served.model}'s max_batch_size {served.max_batch}")
        return StreamPlan(spec, sizes, endpoint=served, warmup_s=warmup_s)
    if source is None:
        raise OptionError("nothing to benchmark: give --variant, --onnx PATH, --engine PATH or --endpoint")
    rb, rh, rw = spec.reference
    plan = plan_benchmark(source, batches=(rb,), resolutions=((rh, rw),), **runner_choices)
    cases = [Case(*s) for s in dict.fromkeys((spec.reference, *sizes))]
    return StreamPlan(spec, sizes, target=prepare(plan.target, cases), warmup_s=warmup_s)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class StreamRequest:
    """One timed request: of the stream or of the reference; ``first_sight``: a size not sent before."""

    index: int
    series: str  # "stream" or "reference"
    batch: int
    height: int
    width: int
    latency_ms: float
    first_sight: bool = False

    @property
    def megapixels(self) -> float:
        return self.batch * self.height * self.width / 1e6


@dataclass(frozen=True)
class Series:
    """Latency figures of a list of requests; ``ms_per_mpx`` is their total time over their megapixels."""

    requests: int
    distinct_sizes: int
    megapixels: float
    total_ms: float
    ms_per_mpx: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, requests: Sequence[StreamRequest]) -> Series:
        if not requests:
            raise ValueError("no requests to summarise")
        lat = [r.latency_ms for r in requests]
        mpx = sum(r.megapixels for r in requests)
        total = sum(lat)
        return cls(len(lat), len({(r.batch, r.height, r.width) for r in requests}), mpx, total, total / mpx,
                   total / len(lat), percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), max(lat))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(stats: Mapping[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` that ``stats`` has as a number (or a collection: its length)."""
    for k in keys:
        v = stats.get(k)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            return int(v)
        if isinstance(v, (list, tuple, set, dict)):
            return len(v)
    return None


def _plain(value: Any) -> Any:
    """``value`` as JSON has it (tuples as lists, unknown objects as text)."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class StreamReport:
    """A measured stream, its interleaved reference, and what the runner says of its shapes."""

    runner: str
    spec: StreamSpec
    machine: dict[str, Any]
    versions: dict[str, str | None]
    settings: dict[str, Any]
    requests: list[StreamRequest] = field(default_factory=list)
    #: the runner's ``shape_stats()`` as it returned it (None: it has none, or a served model)
    shape_stats: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def _of(self, series: str) -> list[StreamRequest]:
        return [r for r in self.requests if r.series == series]

    @property
    def stream(self) -> Series:
        return Series.of(self._of("stream"))

    @property
    def reference(self) -> Series:
        return Series.of(self._of("reference"))

    @property
    def ratio(self) -> float:
        """The stream's ms per megapixel over the reference's (> 1: the stream costs more per pixel)."""
        return self.stream.ms_per_mpx / self.reference.ms_per_mpx

    @property
    def first_sights(self) -> list[StreamRequest]:
        return [r for r in self._of("stream") if r.first_sight]

    def first_sight(self) -> dict[str, Any]:
        lat = [r.latency_ms for r in self.first_sights]
        return {"requests": len(lat), "median_ms": statistics.median(lat) if lat else None,
                "max_ms": max(lat) if lat else None}

    @property
    def specializations(self) -> int | None:
        """Executables made for one size, as the runner counts them (None: not known)."""
        return None if self.shape_stats is None else _count(self.shape_stats, "specializations", "made",
                                                                "compiles", "specialized")

    @property
    def cache_bytes(self) -> int | None:
        return None if self.shape_stats is None else _count(self.shape_stats, "cache_bytes")

    @property
    def policy(self) -> Any:
        return None if self.shape_stats is None else self.shape_stats.get("policy")

    def rows(self) -> list[dict[str, Any]]:
        """The stream and the reference, one row each, for the table."""
        out = []
        for name, s in (("stream", self.stream), ("reference", self.reference)):
            label = self.spec.text if name == "stream" else f"reference {format_size(self.spec.reference)}"
            out.append({"series": label, **s.to_dict()})
        return out

    COLUMNS = [("series", "series"), ("requests", "requests"), ("distinct_sizes", "sizes"), ("megapixels", "Mpx"),
               ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
               ("ms_per_mpx", "ms/Mpx")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "stream",
            "machine": self.machine,
            "versions": self.versions,
            "settings": self.settings,
            "runner": self.runner,
            "stream": self.stream.to_dict(),
            "reference": {"size": list(self.spec.reference), **self.reference.to_dict()},
            "ratio": self.ratio,
            "first_sight": self.first_sight(),
            "specializations": self.specializations,
            "cache_bytes": self.cache_bytes,
            "policy": _plain(self.policy),
            "shape_stats": _plain(self.shape_stats),
            "notes": list(self.notes),
            "requests": [asdict(r) for r in self.requests],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        """One row per timed request, in the order sent."""
        buf = io.StringIO()
        names = ["index", "series", "batch", "height", "width", "first_sight", "latency_ms"]
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for r in self.requests:
            writer.writerow({k: v for k, v in asdict(r).items() if k in names})
        return buf.getvalue()

    def summary_lines(self) -> list[str]:
        """The ratio, the first sights and the specialisations, one line each."""
        first = self.first_sight()
        lines = [f"ratio: the stream costs {self.ratio:.3g}x the reference's ms per megapixel"]
        if first["requests"]:
            lines.append(f"first sight: {first['requests']} requests of a size not sent before, median "
                         f"{first['median_ms']:.4g} ms, max {first['max_ms']:.4g} ms")
        else:
            lines.append("first sight: none (every size of the stream had been sent before)")
        if self.shape_stats is not None:
            known = [f"specialisations {self.specializations}" if self.specializations is not None else None,
                     f"cache {self.cache_bytes} bytes" if self.cache_bytes is not None else None,
                     f"policy {self.policy}" if self.policy is not None else None]
            others = [f"{k} {v}" for k, v in self.shape_stats.items()
                      if k not in ("policy", "cache_bytes") and isinstance(v, (int, float, str))]
            lines.append("shapes: " + "; ".join([k for k in known if k] + others))
        return lines + [f"note: {n}" for n in self.notes]

    def to_markdown(self, title: str = "Stream of sizes") -> str:
        lines = [f"## {title}", "", f"Machine: {machine_line(self.machine, self.versions)}", "",
                 f"{self.runner}: {self.spec.describe()}, reference {format_size(self.spec.reference)} interleaved", "",
                 "| " + " | ".join(h for _, h in self.COLUMNS) + " |",
                 "|---|" + "---:|" * (len(self.COLUMNS) - 1)]
        for row in self.rows():
            lines.append("| " + " | ".join(_cell(row[k]) for k, _ in self.COLUMNS) + " |")
        return "\n".join([*lines, "", *[f"- {line}" for line in self.summary_lines()], ""])


def _cell(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- the run


def _request(runner: Runner, x: np.ndarray, clock: Clock) -> float:
    """One request, host-timed from load to fetch (synchronised), in ms."""
    t0 = clock()
    runner.run(runner.load_input(x))
    runner.synchronize()
    runner.fetch()
    return (clock() - t0) * 1e3


def _shape_stats(runner: Runner) -> dict[str, Any] | None:
    stats = getattr(runner, "shape_stats", None)
    if callable(stats):
        try:
            stats = stats()
        except NotImplementedError:
            return None
    return dict(stats) if isinstance(stats, Mapping) else None


def run_stream(
    plan: StreamPlan,
    *,
    progress: Callable[[int, int], None] | None = None,
    clock: Clock = time.perf_counter,
) -> StreamReport:
    """Open the runner, warm it up on the reference, then send the stream with a reference request beside
    each of its requests (the order alternating), one at a time. ``progress(done, total)`` after each pair."""
    from . import open_runners

    spec = plan.spec
    settings: dict[str, Any] = {"shapes": spec.to_dict(), "warmup_s": plan.warmup_s,
                                "order": "interleaved: stream and reference requests in pairs, the order alternating"}
    notes: list[str] = []
    rng = np.random.default_rng(spec.seed + 1)
    references = make_inputs((spec.reference[0], 3, *spec.reference[1:]), 2, spec.seed)
    with ExitStack() as stack:
        if plan.endpoint is not None:
            from ...runners.endpoint import EndpointRunner

            runner: Runner = stack.enter_context(EndpointRunner(plan.endpoint))
            settings["endpoint"] = {"url": plan.endpoint.url, "model": plan.endpoint.model,
                                    "protocol": plan.endpoint.protocol}
            device = "cpu"
        elif plan.target is not None:
            runner = stack.enter_context(open_runners(plan.target))[0]
            settings["target"] = plan.target.to_dict()
            device = plan.target.device
        else:
            raise OptionError("a stream plan names neither a model nor a served model")
        report = StreamReport(runner.name, spec, machine_info(device), versions(), settings, notes=notes)
        start = clock()
        while True:  # warm-up: the reference only, at least once
            _request(runner, references[0], clock)
            if clock() - start >= plan.warmup_s:
                break
        seen = {spec.reference}
        for i, size in enumerate(plan.sizes):
            x = rng.standard_normal((size[0], 3, size[1], size[2]), dtype=np.float32)
            for series in (("stream", "reference") if i % 2 == 0 else ("reference", "stream")):
                if series == "stream":
                    ms = _request(runner, x, clock)
                    report.requests.append(StreamRequest(i, "stream", *size, ms, size not in seen))
                    seen.add(size)
                else:
                    ms = _request(runner, references[i % len(references)], clock)
                    report.requests.append(StreamRequest(i, "reference", *spec.reference, ms))
            if progress is not None:
                progress(i + 1, len(plan.sizes))
        if plan.endpoint is not None:
            notes.append("specialisations and cache bytes are not known over the wire (the server keeps them)")
        else:
            report.shape_stats = _shape_stats(runner)
            if report.shape_stats is None:
                notes.append(f"{runner.name} reports no shape statistics: specialisations and cache bytes unknown")
    return report
