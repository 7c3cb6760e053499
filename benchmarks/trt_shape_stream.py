"""GPU: a TensorRT engine fed a stream of changing input sizes, the shape policy's way against the old one.

Two streams, both inside the engine's profiles: ``random`` (every request a new size) and ``cycle`` (a
few sizes in turn, as a service with several clients sees them). Two runners on the same FP16 engine:

- ``policy``: ``TensorRTRunner(cuda_graph=True, shapes=dynamic)``: one context per profile, a context and
  a CUDA graph per recurring size after ``--specialize-after`` sightings, at most ``--max-specialized``;
- ``no-graphs``: the same runner without graphs (``cuda_graph=False``): plain enqueues on the profiles'
  contexts, what a size change cost before (the former single context that switched profiles is gone
  from the runner; compare with a result of the previous version for that row).

Each request is timed on the host from ``infer`` call to its return (copy in, run, copy out, synchronised);
reported per stream and runner: ms per request p50 / p99 and ms per megapixel (total time / total pixels).
Without TensorRT or CUDA it prints one line and exits 0.

    python benchmarks/trt_shape_stream.py --engine artifacts/convmlp_s.fp16.engine --requests 400 --json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import common


def _available() -> str | None:
    try:
        import torch

        from deploy.trt.version import tensorrt_version
    except ImportError as exc:
        return f"no TensorRT/CUDA ({exc})"
    if tensorrt_version() is None or not torch.cuda.is_available():
        return "no TensorRT/CUDA"
    return None


def streams(profiles: list[Any], requests: int, seed: int, cycle_len: int) -> dict[str, list[tuple[int, ...]]]:
    """``random`` and ``cycle`` streams of NCHW shapes inside ``profiles``."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def draw() -> tuple[int, ...]:
        p = profiles[int(rng.integers(len(profiles)))]
        pairs = enumerate(zip(p.min, p.max, strict=True))
        return tuple(lo if i == 1 else int(rng.integers(lo, hi + 1)) for i, (lo, hi) in pairs)

    cycle = [draw() for _ in range(cycle_len)]
    return {"random": [draw() for _ in range(requests)], "cycle": [cycle[i % cycle_len] for i in range(requests)]}


def run_stream(runner: Any, shapes: list[tuple[int, ...]], seed: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    times, pixels = [], 0
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        t0 = time.perf_counter()
        runner.infer(x)
        times.append((time.perf_counter() - t0) * 1e3)
        pixels += shape[0] * shape[2] * shape[3]
    arr = np.array(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "ms_per_mpx": float(arr.sum() / (pixels / 1e6)), "requests": len(shapes)}


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__, first_line=True)
    parser.add_argument("--engine", type=Path, help="a TensorRT plan built by convmlp-deploy build")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--cycle", type=int, default=6, help="sizes in the cycle stream")
    parser.add_argument("--specialize-after", type=int, default=3)
    parser.add_argument("--max-specialized", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    common.add_out(parser, "trt_shape_stream.md", "trt_shape_stream.json")
    args = common.parse_args(parser, argv, counts=("requests", "cycle"))

    reason = _available()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    if args.engine is None or not args.engine.is_file():
        print("trt_shape_stream: give --engine PATH (a plan built by convmlp-deploy build)", file=sys.stderr)
        return 2

    from deploy.runners.tensorrt import TensorRTRunner
    from deploy.shapes import ShapePolicy

    policy = ShapePolicy(specialize_after=args.specialize_after, max_specialized=args.max_specialized)
    runners = {
        "policy": lambda: TensorRTRunner(args.engine, cuda_graph=True, shapes=policy),
        "no-graphs": lambda: TensorRTRunner(args.engine, cuda_graph=False, shapes="static"),
    }
    rows = []
    with TensorRTRunner(args.engine) as probe:
        cases = streams(probe.profiles, args.requests, args.seed, args.cycle)
    for stream_name, shapes in cases.items():
        for runner_name, make in runners.items():
            with make() as runner:
                row = {"stream": stream_name, "runner": runner_name, **run_stream(runner, shapes, args.seed)}
                row["shape_stats"] = runner.shape_stats()
            rows.append(row)
    if args.json:
        print(json.dumps(rows))
    lines = [common.machine_header("cuda"), "", "| stream | runner | p50 ms | p99 ms | ms/Mpx | CUDA graphs |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['stream']} | {r['runner']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['ms_per_mpx']:.3f} | "
              f"{r['shape_stats']['graphs']} |" for r in rows]
    common.write_results(args.out, "trt_shape_stream", "\n".join(lines), {"engine": str(args.engine), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
