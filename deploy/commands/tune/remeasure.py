"""Re-measuring deployments the way ``tune`` timed them: ``benchmark --config deploy.json``, and the
speed-ups of ``benchmarks/tune_figures.py`` (the tuned deployment against baselines, in one interleaved run).

Each configuration is opened fresh (as each of tune's comparisons opens its runners), then timed in
``rounds`` rounds over the recorded workload, each slice ``passes`` passes over its sizes in stream order
after one untimed query (``search.time_slice``); with several configurations the order rotates from round
to round, so a drifting machine cannot favour one. The figures are ``search.Figures`` over every timed
query: p50/p99 latency, images/s and ms per megapixel, the same figures ``deploy.json`` records.

``in_fresh_process`` is how ``tune`` times its best: this module run as ``python -m
deploy.commands.tune.remeasure deploy.json --rounds R --passes P`` (``remeasure``, what ``benchmark --config``
calls), in a process of its own, so that the figure ``deploy.json`` records and the one ``benchmark
--config`` finds again are the same measurement made twice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...deployconfig import ConfigError, DeployConfig, load_config, model_source, runner_options, write_config
from ...errors import DeployError, OptionError, one_line
from ...loader import plan_model, reference_model
from ...runners.base import Runner
from .search import ROUNDS, Figures, SideTimings, open_group
from .workload import Workload

__all__ = ["Remeasured", "config_workload", "open_config", "measure_configs", "remeasure", "in_fresh_process",
           "FRESH_START_S"]

#: the figure each objective is judged by
OBJECTIVE_FIGURE = {"latency": "p50_ms", "throughput": "images_per_s"}
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
                lat, _ = sides[i].slice(groups[i], batch, workload, passes, inputs)
                sides[i].round_scores.append(statistics.median(lat))
    return [s.figures() for s in sides]


@dataclass
class Remeasured:
    """A deployment measured again here, beside what ``tune`` recorded."""

    config: DeployConfig
    workload: Workload
    figures: Figures
    rounds: int
    passes: int

    @property
    def objective(self) -> str:
        return str(self.config.measured.get("objective", "latency"))

    def ratio(self) -> float | None:
        """Now over recorded, on the objective's figure (p50 latency, or images/s); None if not recorded."""
        key = OBJECTIVE_FIGURE.get(self.objective, OBJECTIVE_FIGURE["latency"])
        recorded = self.config.measured.get(key)
        if not isinstance(recorded, (int, float)) or recorded <= 0:
            return None
        return getattr(self.figures, key) / recorded

    def to_dict(self) -> dict[str, Any]:
        key = OBJECTIVE_FIGURE.get(self.objective, OBJECTIVE_FIGURE["latency"])
        recorded = {k: self.config.measured.get(k) for k in ("p50_ms", "p99_ms", "images_per_s", "ms_per_mpx")}
        return {"deployment": self.config.label(), "workload": self.workload.to_dict(), "rounds": self.rounds,
                "passes_per_round": self.passes, "objective": self.objective, "figure": key,
                "now": self.figures.to_dict(), "recorded": recorded, "ratio": self.ratio()}


def remeasure(config: DeployConfig, *, workload: Workload | None = None, rounds: int | None = None,
              passes: int | None = None) -> Remeasured:
    """``config`` timed again on its recorded workload (or ``workload``), with the rounds and passes per
    round of the figures it recorded (``measured.rounds``, ``measured.passes_per_round``; ``ROUNDS`` and 1
    when not recorded)."""
    w = workload or config_workload(config)
    r = rounds or int(config.measured.get("rounds", ROUNDS) or ROUNDS)
    p = passes or int(config.measured.get("passes_per_round", 1) or 1)
    return Remeasured(config, w, measure_configs([config], w, rounds=r, passes=p)[0], r, p)


def in_fresh_process(config: DeployConfig, folder: Path, *, rounds: int, passes: int, timeout_s: float) -> Figures:
    """``config`` timed by ``remeasure`` in a process of its own (this module's ``main``): its figures.

    The config is written to a temporary file in ``folder`` (where its model paths resolve) and removed
    after. ``DeployError`` (one line) when the process fails or runs past ``timeout_s``."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".tune-alone-", suffix=".json", dir=folder)
    os.close(fd)
    try:
        write_config(name, config)
        cmd = [sys.executable, "-m", __name__, name, "--rounds", str(rounds), "--passes", str(passes)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise DeployError(f"the fresh timing process ran past {timeout_s:.0f} s") from None
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
            raise DeployError(f"the fresh timing process failed: {last}")
        try:
            now = json.loads(res.stdout)["now"]
            return Figures(**{k: now[k] for k in ("p50_ms", "p99_ms", "images_per_s", "ms_per_mpx", "queries")})
        except (ValueError, KeyError, TypeError):
            raise DeployError("the fresh timing process printed no figures") from None
    finally:
        Path(name).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.commands.tune.remeasure CONFIG [--rounds R] [--passes P]``: ``remeasure``'s JSON on
    stdout; a config that cannot be used is one line on stderr, exit 2; a runner that fails, exit 1."""
    ap = argparse.ArgumentParser(prog="python -m deploy.commands.tune.remeasure", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--passes", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        result = remeasure(load_config(args.config).config, rounds=args.rounds, passes=args.passes)
    except OptionError as exc:
        print(one_line(exc), file=sys.stderr)
        return 2
    except DeployError as exc:
        print(one_line(exc), file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
