"""``benchmark --endpoint``: a served model under concurrent clients, in the manner of ``perf_analyzer``.

For each concurrency level C, C client threads (each with its own connection) send requests back to
back for a warm-up and then a fixed time; shapes are fixed, or taken in turn from a list (mixed
resolutions). Per level: requests completed in the timed window, errors, throughput (requests/s and
images/s), and latency p50/p90/p99 and mean, as the client sees it (network and queueing included).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DeployError, OptionError

__all__ = ["LevelResult", "EndpointReport", "run_concurrency", "plot_endpoint_report"]

Shape = tuple[int, int, int, int]


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    images_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    first_error: str | None = None


@dataclass
class EndpointReport:
    endpoint: str
    model: str
    protocol: str
    shapes: list[list[int]]
    warmup_s: float
    duration_s: float
    machine: dict[str, Any]
    versions: dict[str, Any]
    results: list[LevelResult] = field(default_factory=list)

    COLUMNS = [("concurrency", "clients"), ("requests", "requests"), ("errors", "errors"),
               ("requests_per_s", "requests/s"), ("images_per_s", "images/s"), ("p50_ms", "p50 ms"),
               ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("mean_ms", "mean ms")]

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "model": self.model, "protocol": self.protocol, "shapes": self.shapes,
                "warmup_s": self.warmup_s, "duration_s": self.duration_s, "machine": self.machine,
                "versions": self.versions, "results": self.rows()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["endpoint", "model", "protocol", *[k for k, _ in self.COLUMNS]],
                                extrasaction="ignore")
        writer.writeheader()
        for r in self.rows():
            writer.writerow({"endpoint": self.endpoint, "model": self.model, "protocol": self.protocol, **r})
        return out.getvalue()


def run_concurrency(
    endpoint: tuple[str, str, str],
    shapes: Sequence[Shape],
    levels: Sequence[int],
    *,
    duration_s: float = 3.0,
    warmup_s: float = 0.5,
    on_result: Callable[[LevelResult], None] | None = None,
) -> EndpointReport:
    """Each concurrency level of ``levels`` against the served model, shapes in turn from ``shapes``."""
    from ...machine import machine_info, versions
    from ...reference import sample_images
    from ...runners.endpoint import EndpointRunner, describe_endpoint

    url, name, protocol = endpoint
    if not shapes or not levels:
        raise OptionError("give at least one shape and one concurrency level")
    served = describe_endpoint(url, name, protocol)
    if served.max_batch and max(s[0] for s in shapes) > served.max_batch:
        raise OptionError(f"--batch {max(s[0] for s in shapes)} is above {name}'s max_batch_size {served.max_batch}")
    inputs = [sample_images(s, i) for i, s in enumerate(shapes)]
    report = EndpointReport(f"{url}", name, protocol, [list(s) for s in shapes], warmup_s, duration_s,
                            machine_info("cpu"), versions())
    for level in levels:
        result = _level(served, inputs, level, warmup_s, duration_s, EndpointRunner)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    return report


def _level(served: Any, inputs: list[np.ndarray], clients: int, warmup_s: float, duration_s: float,
           runner_cls: Any) -> LevelResult:
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    lock = threading.Lock()
    latencies: list[float] = []
    images = [0]
    errors: list[str] = []

    def client(k: int) -> None:
        i = k
        try:
            with runner_cls(served) as runner:
                while (now := time.perf_counter()) < end:
                    x = inputs[i % len(inputs)]
                    i += 1
                    try:
                        runner.infer(x)
                    except DeployError as exc:
                        with lock:
                            errors.append(str(exc))
                        continue
                    done = time.perf_counter()
                    if now >= start and done <= end:
                        with lock:
                            latencies.append((done - now) * 1e3)
                            images[0] += x.shape[0]
        except DeployError as exc:
            with lock:
                errors.append(str(exc))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(warmup_s + duration_s + 60)
    lat = np.array(latencies)
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: None)
    return LevelResult(clients, int(lat.size), len(errors), duration_s, lat.size / duration_s, images[0] / duration_s,
                       pct(50), pct(90), pct(99), float(lat.mean()) if lat.size else None,
                       errors[0] if errors else None)


def plot_endpoint_report(report: EndpointReport, path: str | Path) -> Path:
    """Throughput and p99 latency against the clients in flight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...artifacts import staged_path

    xs = [r.concurrency for r in report.results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(xs, [r.images_per_s for r in report.results], marker="o")
    a.set(xlabel="clients in flight", ylabel="images/s", title=f"{report.model} throughput")
    b.plot(xs, [r.p50_ms for r in report.results], marker="o", label="p50")
    b.plot(xs, [r.p99_ms for r in report.results], marker="o", label="p99")
    b.set(xlabel="clients in flight", ylabel="ms", title="latency")
    b.legend()
    fig.tight_layout()
    final = Path(path)
    tmp = staged_path(final, suffix=final.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(final)
    return final
