"""Re-measuring deployments the way ``tune`` timed them: ``benchmark --config deploy.json``, and the
speed-ups of ``benchmarks/tune_figures.py`` (the tuned deployment against baselines, in one interleaved run).

Each configuration is opened fresh (as each of tune's comparisons opens its runners), then timed in
``rounds`` rounds over the recorded workload, each slice ``passes`` passes over its sizes in stream order
after one untimed query (``search.time_slice``); with several configurations the order rotates from round
to round, so a drifting machine cannot favour one. The figures are ``figures.Figures`` over every timed
query: p50/p99 latency, the per-size p50 (``figures.size_p50``, what a latency objective is judged by),
images/s and ms per megapixel, the same figures ``deploy.json`` records.

``in_fresh_processes`` is how ``tune`` times its best and how ``benchmark --config`` (``remeasure``) times
it again: this module run as ``python -m deploy.commands.tune.remeasure deploy.json --rounds R --passes P``
in ``PROCESSES`` processes of their own, one after the other, the figures those of the median process. So the
figure ``deploy.json`` records and the one ``benchmark --config`` finds again are the same measurement made
twice, and neither is one process's luck.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...deployconfig import ConfigError, DeployConfig, load_config, model_source, runner_options, write_config
from ...errors import DeployError, OptionError, one_line
from ...loader import plan_model, reference_model
from ...runners.base import Runner
from .figures import OBJECTIVE_FIGURE, Figures, median_process, process_spread, unsteady_note
from .search import ROUNDS, SideTimings, open_group
from .workload import Workload

__all__ = ["Remeasured", "config_workload", "open_config", "measure_configs", "remeasure", "in_fresh_processes",
           "recorded_timing", "PROCESSES", "FRESH_START_S"]

#: fresh processes a deployment is timed in, its figures the median process's: on the 2-core VMs here one
#: process's p50 lands up to 15% from the next one's (0.95, 0.80, 0.88x of one config within 40 s), while the
#: queries within one process agree
PROCESSES = 3
#: a fresh process's start before its first runner opens (Python, PyTorch, the runtimes imported): measured
#: 4-6 s on the 2-core machines here; kept within tune's budget for the best's own timing
FRESH_START_S = 8.0


def config_workload(config: DeployConfig) -> Workload:
    """The workload ``config`` was tuned on (``measured.workload``); ``ConfigError`` when it records none."""
    w = config.measured.get("workload") or {}
    try:
        sizes = tuple(tuple(int(v) for v in str(s).lower().split("x")) for s in w["sizes"])
        if not sizes or any(len(s) != 2 for s in sizes):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        name = config.origin.name if config.origin else "the deployment"
        raise ConfigError(f"{name} records no workload (measured.workload.sizes) to time it on: run "
                          "'convmlp-deploy tune' again to write one") from None
    return Workload(str(w.get("spec", "recorded")), str(w.get("kind", "file")), sizes)  # type: ignore[arg-type]


@contextmanager
def open_config(config: DeployConfig) -> Iterator[list[Runner]]:
    """The active runner(s) of ``config``, ``streams`` queries in flight (``search.open_group``)."""
    source = model_source(config)
    model = reference_model(config.variant or "s", source.weights) if source.path is None else None
    with open_group(plan_model(source, config.backend, runner_options(config)), config.streams, model) as group:
        yield group


def measure_configs(configs: Sequence[DeployConfig], workload: Workload, *, rounds: int = ROUNDS,
                    passes: int = 1) -> list[Figures]:
    """``configs`` timed in ``rounds`` rotating rounds over ``workload`` (module docstring)."""
    if rounds < 1 or passes < 1:
        raise ValueError("rounds and passes must be >= 1")
    sides = [SideTimings() for _ in configs]
    inputs: dict[tuple[int, ...], Any] = {}
    with ExitStack() as stack:
        groups = [stack.enter_context(open_config(c)) for c in configs]
        n = len(configs)
        for k in range(rounds):
            for i in [(k + j) % n for j in range(n)]:
                batch = int(configs[i].batching.get("batch", 1) or 1)
                latency_ms, _, _ = sides[i].slice(groups[i], batch, workload, passes, inputs)
                sides[i].round_scores.append(latency_ms)
    return [s.figures() for s in sides]


@dataclass
class Remeasured:
    """A deployment measured again here, in fresh processes, beside what ``tune`` recorded."""

    config: DeployConfig
    workload: Workload
    processes: list[Figures]
    rounds: int
    passes: int

    @property
    def objective(self) -> str:
        return str(self.config.measured.get("objective", "latency"))

    @property
    def key(self) -> str:
        """The objective's figure; ``p50_ms`` for a latency config written before ``size_p50_ms`` was recorded."""
        key = OBJECTIVE_FIGURE.get(self.objective, OBJECTIVE_FIGURE["latency"])
        if key == "size_p50_ms" and key not in self.config.measured and "p50_ms" in self.config.measured:
            return "p50_ms"
        return key

    @property
    def figures(self) -> Figures:
        """The median process's figures."""
        return median_process(self.processes, self.key)

    def _over_recorded(self, f: Figures) -> float | None:
        recorded = self.config.measured.get(self.key)
        if not isinstance(recorded, (int, float)) or recorded <= 0:
            return None
        return float(getattr(f, self.key)) / recorded

    def unsteady(self) -> str | None:
        """One line when the processes spread beyond ``figures.UNSTEADY_SPREAD`` on the objective's figure."""
        return unsteady_note(self.processes, self.key, "benchmark --config")

    def ratio(self) -> float | None:
        """The median process over recorded, on the objective's figure (p50 latency, or images/s); None if
        the config records none."""
        return self._over_recorded(self.figures)

    def to_dict(self) -> dict[str, Any]:
        recorded = {k: self.config.measured.get(k) for k in ("p50_ms", "size_p50_ms", "p99_ms", "images_per_s",
                                                              "ms_per_mpx")}
        return {"deployment": self.config.label(), "workload": self.workload.to_dict(), "rounds": self.rounds,
                "passes_per_round": self.passes, "objective": self.objective, "figure": self.key,
                "now": self.figures.to_dict(), "processes": [f.to_dict() for f in self.processes],
                "process_ratios": [self._over_recorded(f) for f in self.processes], "recorded": recorded,
                "ratio": self.ratio(), "process_spread": process_spread(self.processes, self.key),
                "unsteady": self.unsteady()}


def recorded_timing(config: DeployConfig) -> tuple[int, int, int]:
    """(processes, rounds, passes per round) of the figures ``config`` records (``measured.processes``,
    ``.rounds``, ``.passes_per_round``; ``PROCESSES``, ``ROUNDS`` and 1 where not recorded); ``ConfigError``
    for a value that is not a whole number >= 1."""
    m = config.measured
    found = []
    for key, default in (("processes", PROCESSES), ("rounds", ROUNDS), ("passes_per_round", 1)):
        value = m.get(key)
        if value is None:
            found.append(default)
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            found.append(value)
        else:
            name = config.origin.name if config.origin else "the deployment"
            raise ConfigError(f"{name}: measured.{key} must be a whole number >= 1, not {value!r}: run "
                              "'convmlp-deploy tune' again to write it")
    return found[0], found[1], found[2]


def remeasure(config: DeployConfig, *, workload: Workload | None = None, timeout_s: float = 3600.0) -> Remeasured:
    """``config`` timed again on its recorded workload (or ``workload``) the way its figures were timed: in
    as many fresh processes, each as many rounds of as many passes (``recorded_timing``)."""
    w = workload or config_workload(config)
    n, rounds, passes = recorded_timing(config)
    figs = in_fresh_processes(config, processes=n, rounds=rounds, passes=passes, workload=w, timeout_s=timeout_s)
    return Remeasured(config, w, figs, rounds, passes)


def in_fresh_processes(config: DeployConfig, *, processes: int, rounds: int, passes: int, timeout_s: float,
                       workload: Workload | None = None) -> list[Figures]:
    """``config`` timed in ``processes`` processes of its own, one after the other (this module's ``main``:
    ``measure_configs`` on the one config): each one's figures.

    The config, its model paths made absolute (a read config's relative ones resolve against its own
    folder), is written to a temporary file and removed after. ``DeployError`` (one line) when a process
    fails or they run past ``timeout_s`` in all."""
    files = tuple(replace(f, path=str(config.resolve(f))) if f.path else f for f in config.files)
    config = replace(config, files=files)
    if workload is not None:
        config = replace(config, measured={**config.measured, "workload": workload.to_dict()})
    fd, name = tempfile.mkstemp(prefix="convmlp-timing-", suffix=".json")
    os.close(fd)
    deadline = time.monotonic() + timeout_s
    try:
        write_config(name, config)
        return [_one_process(name, rounds, passes, deadline - time.monotonic()) for _ in range(processes)]
    finally:
        Path(name).unlink(missing_ok=True)


def _one_process(path: str, rounds: int, passes: int, timeout_s: float) -> Figures:
    cmd = [sys.executable, "-m", __name__, path, "--rounds", str(rounds), "--passes", str(passes)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout_s, 1.0), check=False)
    except subprocess.TimeoutExpired:
        raise DeployError("a fresh timing process ran past the time left for it") from None
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        raise DeployError(f"a fresh timing process failed: {last}")
    try:
        now = json.loads(res.stdout)["figures"]
        return Figures(**{k: now[k] for k in ("p50_ms", "size_p50_ms", "p99_ms", "images_per_s", "ms_per_mpx",
                                              "queries")})
    except (ValueError, KeyError, TypeError):
        raise DeployError("a fresh timing process printed no figures") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.commands.tune.remeasure CONFIG --rounds R --passes P``: CONFIG timed here on its
    recorded workload (``measure_configs``), ``{"figures": ...}`` on stdout; a config that cannot be used is
    one line on stderr, exit 2; a runner that fails, exit 1."""
    ap = argparse.ArgumentParser(prog="python -m deploy.commands.tune.remeasure", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--passes", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config).config
        (figures,) = measure_configs([config], config_workload(config), rounds=args.rounds, passes=args.passes)
    except OptionError as exc:
        print(one_line(exc), file=sys.stderr)
        return 2
    except DeployError as exc:
        print(one_line(exc), file=sys.stderr)
        return 1
    print(json.dumps({"figures": figures.to_dict()}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
