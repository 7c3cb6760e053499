"""The dynamic shape policy on OpenVINO, through ``deploy.load`` with its defaults, on streams of sizes.

ConvMLP takes any input of 32x32 or more, so a service is sent sizes it has never seen. Per variant and
precision (FP32; BF16 where the CPU has it), batch 1, one process, requests one at a time:

1. **random vs fixed**: ``--random`` new sizes (height and width uniform in [64, 512], none repeated)
   interleaved with a fixed 224x224 stream (specialised by its warm-up, as a service's usual size is).
   ms per megapixel of each (total time over total megapixels) and their ratio (target <= 1.5x). Each
   random size is also sent, in the same round, to a model that only has the dynamic executable
   (``max_specialized=0``): the worst ratio of a request's latency to that model's first sight of the
   same size says whether any request paid for a compile (target <= 2x).
2. **a cycle of 8 sizes** after warm-up (the cycle sent until every size is specialised, as the policy
   does by itself after 3 sightings): ms/Mpx against the same cycle on the ``static`` policy (a model
   compiled for each size, the best a per-size executable does; target <= 1.1x), interleaved by round.
3. **disk cache**: ``--cache-requests`` requests drawn from 24 sizes (so that sizes recur and earn
   static compiles, ~36 MB a blob for S) with the cache bound at ``--cache-bound``, in a folder of its
   own: the most bytes the cache held after any request (target: under the bound; the bound is kept
   after each compile, so a compile under way may hold one blob more for a moment).
4. **outputs** at a few sizes against PyTorch FP32, at the precision's gate (``deploy.compare``).

The cache lives in a temporary ``XDG_CACHE_HOME`` (the default folder's layout, a fresh one), so that
earlier runs cannot serve a compile. Results: ``--out``/openvino_shape_stream.{json,md}.

    python benchmarks/openvino_shape_stream.py                                  # S, FP32 + BF16, ~3 min on 2 cores
    python benchmarks/openvino_shape_stream.py --variants s l --out benchmarks/results
    python benchmarks/openvino_shape_stream.py --random 8 --cache-requests 30 --out /tmp/x   # quick check
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

log = common.log
TARGETS = {"random_vs_fixed": 1.5, "cycle_vs_static": 1.1, "worst_vs_first_sight": 2.0}
CYCLE = ((1, 192, 192), (1, 256, 256), (1, 224, 320), (1, 320, 224), (1, 288, 288), (1, 160, 384),
         (1, 384, 256), (1, 320, 320))


def _x(size: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    b, h, w = size
    return np.random.default_rng(seed + h * 7919 + w).standard_normal((b, 3, h, w)).astype(np.float32)


def _mpx(size: tuple[int, int, int]) -> float:
    return size[0] * size[1] * size[2] / 1e6


def _time(model: Any, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    model(x)
    return (time.perf_counter() - t0) * 1e3


def _ms_per_mpx(rows: list[tuple[tuple[int, int, int], float]]) -> float:
    return sum(ms for _, ms in rows) / sum(_mpx(s) for s, _ in rows)


def _settle(model: Any, timeout: float = 120.0) -> None:
    """Wait until the background worker has made what it was asked for."""
    end = time.monotonic() + timeout
    while model.info()["shapes"]["pending"] and time.monotonic() < end:
        time.sleep(0.05)


def random_sizes(n: int, seed: int, lo: int = 64, hi: int = 512) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        s = (1, int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
        if s not in out and s[1:] != (224, 224):
            out.append(s)
    return out


def measure(graph: Path, precision: str, args: argparse.Namespace, refs: dict[Any, np.ndarray]) -> dict[str, Any]:
    import deploy
    from deploy.compare import tolerance_for
    from deploy.shapes import ShapePolicy

    load = {"backend": "openvino", "precision": precision, "threads": args.threads}
    fixed = (1, 224, 224)
    out: dict[str, Any] = {"precision": precision}

    # 1. random vs fixed, with a dynamic-only model seeing each random size in the same round
    sizes = random_sizes(args.random, args.seed)
    with deploy.load(graph, **load) as model, deploy.load(graph, **load, shapes=ShapePolicy(max_specialized=0)) as dyn:
        out["runner"] = model.runner_name
        out["policy"] = str(model._loaded.runner.shapes)
        for _ in range(5):
            model(_x(fixed))
            dyn(_x(fixed))
        _settle(model)
        rand, ref, first = [], [], []
        for i, s in enumerate(sizes):
            x = _x(s)
            pair = [("model", model), ("dyn", dyn)] if i % 2 == 0 else [("dyn", dyn), ("model", model)]
            for name, m in pair:
                ms = _time(m, x)
                (rand if name == "model" else first).append((s, ms))
            ref.append((fixed, _time(model, _x(fixed))))
        worst = max(range(len(sizes)), key=lambda i: rand[i][1] / first[i][1])
        out["random"] = {
            "requests": len(rand), "ms_per_mpx": _ms_per_mpx(rand), "fixed_ms_per_mpx": _ms_per_mpx(ref),
            "ratio": _ms_per_mpx(rand) / _ms_per_mpx(ref),
            "dynamic_first_sight_ms_per_mpx": _ms_per_mpx(first),
            "max_ms": max(ms for _, ms in rand), "p50_ms": statistics.median(ms for _, ms in rand),
            "worst_vs_first_sight": rand[worst][1] / first[worst][1],
            "worst_size": list(sizes[worst]), "worst_ms": rand[worst][1], "its_first_sight_ms": first[worst][1],
            "shape_stats": model.info()["shapes"],
        }
        log(f"  {precision} random: {out['random']['ms_per_mpx']:.0f} ms/Mpx vs fixed "
            f"{out['random']['fixed_ms_per_mpx']:.0f} ({out['random']['ratio']:.2f}x); worst/first sight "
            f"{out['random']['worst_vs_first_sight']:.2f}x")
        check = [sizes[i] for i in range(0, len(sizes), max(1, len(sizes) // args.check))][:args.check]
        outputs = {s: model(_x(s)) for s in check}

    # 2. a cycle of 8 sizes, specialised by the policy itself, against the static policy
    with deploy.load(graph, **load) as model, deploy.load(graph, **load, shapes="static") as static:
        t0 = time.perf_counter()
        while model.info()["shapes"]["specializations"] < len(CYCLE) and time.perf_counter() - t0 < 120:
            for s in CYCLE:
                model(_x(s))
                static(_x(s))
            _settle(model)
        warm_s = time.perf_counter() - t0
        for s in CYCLE:  # the first request on a new executable allocates its buffers: not what is measured
            model(_x(s))
            static(_x(s))
        cyc, stat = [], []
        for r in range(args.rounds):
            for s in CYCLE:
                x = _x(s)
                for name, m in ([("model", model), ("static", static)] if r % 2 == 0 else
                                [("static", static), ("model", model)]):
                    (cyc if name == "model" else stat).append((s, _time(m, x)))
        out["cycle"] = {
            "sizes": [list(s) for s in CYCLE], "rounds": args.rounds, "warmup_s": warm_s,
            "ms_per_mpx": _ms_per_mpx(cyc), "static_ms_per_mpx": _ms_per_mpx(stat),
            "ratio": _ms_per_mpx(cyc) / _ms_per_mpx(stat), "shape_stats": model.info()["shapes"],
        }
        log(f"  {precision} cycle: {out['cycle']['ms_per_mpx']:.0f} ms/Mpx vs static "
            f"{out['cycle']['static_ms_per_mpx']:.0f} ({out['cycle']['ratio']:.2f}x), warm-up {warm_s:.1f} s")
        outputs.update({s: model(_x(s)) for s in CYCLE[:2]})

    # 4. outputs against PyTorch at the precision's gate
    gate = tolerance_for(precision)
    cases = []
    for s, y in outputs.items():
        a, b = y.astype(np.float64).ravel(), refs[s].astype(np.float64).ravel()
        rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        ok = rel <= gate.max_rel_l2 and (gate.min_cosine is None or cos >= gate.min_cosine)
        cases.append({"size": list(s), "rel_l2": rel, "cosine": cos, "passed": ok})
    out["outputs"] = {"gate": gate.describe(), "cases": cases, "passed": all(c["passed"] for c in cases)}
    return out


def cache_check(graph: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``--cache-requests`` requests from 24 recurring sizes, the cache bounded at ``--cache-bound``."""
    import deploy
    from deploy.shapes import ShapePolicy, parse_bytes

    bound = parse_bytes(args.cache_bound)
    pool = random_sizes(24, args.seed + 1)
    rng = np.random.default_rng(args.seed + 2)
    most = 0
    root = Path(tempfile.mkdtemp(prefix="cache-", dir=os.environ.get("XDG_CACHE_HOME")))  # this check's alone
    with deploy.load(graph, backend="openvino", precision="fp32", threads=args.threads,
                     shapes=ShapePolicy(cache_bytes=bound, cache_dir=root)) as model:
        for _ in range(args.cache_requests):
            model(_x(pool[int(rng.integers(len(pool)))]))
            most = max(most, model.info()["shapes"]["cache_bytes"])
        _settle(model)
        stats = model.info()["shapes"]
    most = max(most, stats["cache_bytes"])
    log(f"  cache: at most {most / 2**20:.0f} MiB on disk over {args.cache_requests} requests (bound "
        f"{bound / 2**20:.0f} MiB); {stats['made']} compiles made, {stats['evicted']} evicted from memory")
    return {"requests": args.cache_requests, "distinct_sizes": len(pool), "bound_bytes": bound, "max_bytes": most,
            "final_bytes": stats["cache_bytes"], "under_bound": most <= bound, "shape_stats": stats}


def export_graph(variant: str, folder: Path) -> Path:
    from convmlp.spec import io_spec
    from deploy.loader import reference_model
    from export.onnx import export_onnx

    return export_onnx(reference_model(variant), io_spec(variant), folder / f"convmlp_{variant}.onnx")


def torch_refs(variant: str, sizes: list[tuple[int, int, int]]) -> dict[Any, np.ndarray]:
    import torch

    from deploy.loader import reference_model

    model = reference_model(variant)
    with torch.no_grad():
        return {s: model(torch.from_numpy(_x(s))).numpy() for s in sizes}


def to_markdown(data: dict[str, Any]) -> str:
    from deploy.commands.bench.report import machine_line

    lines = ["# OpenVINO: the dynamic shape policy on streams of sizes", "",
             f"Machine: {machine_line(data['machine'], data['versions'])}; {data['threads']} threads, batch 1. "
             "Shared machine: timings are noisy.", "",
             "| variant | precision | random ms/Mpx | fixed 224 ms/Mpx | ratio (<= 1.5) | worst / first sight (<= 2) | "
             "cycle ms/Mpx | static ms/Mpx | ratio (<= 1.1) | outputs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for v, runs in data["variants"].items():
        for r in runs["runs"]:
            ra, cy = r["random"], r["cycle"]
            lines.append(f"| {v} | {r['precision']} | {ra['ms_per_mpx']:.0f} | {ra['fixed_ms_per_mpx']:.0f} | "
                         f"{ra['ratio']:.2f} | {ra['worst_vs_first_sight']:.2f} | {cy['ms_per_mpx']:.0f} | "
                         f"{cy['static_ms_per_mpx']:.0f} | {cy['ratio']:.2f} | "
                         f"{'pass' if r['outputs']['passed'] else 'FAIL'} ({r['outputs']['gate']}) |")
    lines.append("")
    for v, runs in data["variants"].items():
        c = runs["cache"]
        lines.append(f"- {v} disk cache: at most {c['max_bytes'] / 2**20:.0f} MiB over {c['requests']} requests "
                     f"from {c['distinct_sizes']} sizes, bound {c['bound_bytes'] / 2**20:.0f} MiB "
                     f"({'under' if c['under_bound'] else 'OVER'}); {c['shape_stats']['made']} static compiles.")
        for r in runs["runs"]:
            ra = r["random"]
            lines.append(f"- {v} {r['precision']}: dynamic model's first sights {ra['dynamic_first_sight_ms_per_mpx']:.0f} "
                         f"ms/Mpx; worst request {ra['worst_ms']:.0f} ms at {ra['worst_size'][1]}x{ra['worst_size'][2]} "
                         f"(the dynamic model's first sight there: {ra['its_first_sight_ms']:.0f} ms); cycle warm-up "
                         f"{r['cycle']['warmup_s']:.1f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = common.parser(__doc__, first_line=True)
    p.add_argument("--variants", nargs="+", default=["s"], choices=["s", "m", "l"])
    p.add_argument("--precisions", nargs="+", default=None, help="fp32 bf16 [default: both where the CPU has BF16]")
    p.add_argument("--random", type=int, default=35, help="new random sizes in [64, 512]")
    p.add_argument("--rounds", type=int, default=4, help="measured rounds of the 8-size cycle")
    p.add_argument("--cache-requests", type=int, default=200)
    p.add_argument("--cache-bound", default="200M")
    p.add_argument("--check", type=int, default=4, help="random sizes checked against PyTorch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    common.add_out(p, "openvino_shape_stream.md", "openvino_shape_stream.json")
    args = common.parse_args(p, counts=("random", "cache_requests", "check"))

    from deploy.machine import machine_info, versions
    from deploy.runners.openvino import cpu_capabilities

    precisions = args.precisions or (["fp32", "bf16"] if "BF16" in cpu_capabilities() else ["fp32"])
    data: dict[str, Any] = {"machine": machine_info(), "versions": versions(), "threads": args.threads,
                            "targets": TARGETS, "settings": {k: str(v) for k, v in vars(args).items()},
                            "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "xdg")  # the default cache's layout, fresh
        for v in args.variants:
            log(f"{v}: exporting")
            graph = export_graph(v, Path(tmp))
            sizes = random_sizes(args.random, args.seed)
            check = [sizes[i] for i in range(0, len(sizes), max(1, len(sizes) // args.check))][:args.check]
            refs = torch_refs(v, check + list(CYCLE[:2]))
            runs = [measure(graph, prec, args, refs) for prec in precisions]
            data["variants"][v] = {"runs": runs, "cache": cache_check(graph, args)}
    common.write_results(args.out, "openvino_shape_stream", to_markdown(data), data)


if __name__ == "__main__":
    main()
