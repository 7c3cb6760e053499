"""GPU: PyTorch eager against the same model replayed from a captured CUDA graph, FP32 and FP16, ConvMLP
S/M/L: how much of a small batch's latency is launch overhead (what a TensorRT engine with
``--cuda-graph`` also removes). ``bench_gpu.py`` has the eager, ``torch.compile`` and TensorRT rows.

Each case: the model (synthetic weights, eval, ``.half()`` for FP16) on one static input; eager and
graph replay timed alternately over ``--rounds`` rounds, each iteration synchronised (latency as a
caller sees it), median of the per-iteration times. The graph's output is checked against eager's.

    python benchmarks/gpu_cuda_graphs.py --out results/
    python benchmarks/gpu_cuda_graphs.py --variants s --cases 1x64 --rounds 1 --iterations 2 --out /tmp/g   # quick check
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import common

from deploy.commands.bench import Case

CASES = (Case(1, 224, 224), Case(8, 224, 224), Case(32, 224, 224), Case(8, 512, 512))
def _latencies(fn: Any, iterations: int) -> list[float]:
    import torch

    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure(variant: str, dtype: str, case: Case, rounds: int, iterations: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from convmlp import create_model
    from convmlp.weights import synthesize_weights

    model = synthesize_weights(create_model(variant), 0).eval().cuda()
    half = dtype == "fp16"
    if half:
        model = model.half()
    b, h, w = case.batch, case.height, case.width
    x = torch.randn(b, 3, h, w, device="cuda", dtype=torch.float16 if half else torch.float32)
    with torch.no_grad():
        for _ in range(5):
            model(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as the CUDA-graph docs ask
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(x)
        graph.replay()
        torch.cuda.synchronize()
        ref = model(x).float()
        diff = float((static_out.float() - ref).abs().max())
        eager_ms: list[float] = []
        graph_ms: list[float] = []
        for r in range(rounds):  # alternate, so drift moves both alike
            pair = [("eager", lambda: model(x)), ("graph", graph.replay)]
            for name, fn in (pair if r % 2 == 0 else pair[::-1]):
                (eager_ms if name == "eager" else graph_ms).extend(_latencies(fn, iterations))
    e, g = float(np.median(eager_ms)), float(np.median(graph_ms))
    return {"variant": variant, "dtype": dtype, "batch": b, "resolution": f"{h}x{w}", "eager_ms": e, "graph_ms": g,
            "speedup": e / g, "eager_ips": b * 1e3 / e, "graph_ips": b * 1e3 / g, "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__)
    common.add_variants(ap)
    common.add_cases(ap, CASES)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=25, help="timed iterations per round and mode")
    common.add_out(ap, "gpu_cuda_graphs.md", "gpu_cuda_graphs.json")
    args = common.parse_args(ap, argv, counts=("iterations",))
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device: this script needs a GPU (see bench_gpu.py for the rest)", file=sys.stderr)
        return 1
    rows = []
    for v in args.variants:
        for dtype in ("fp32", "fp16"):
            for case in args.cases:
                r = measure(v, dtype, case, args.rounds, args.iterations)
                torch.cuda.empty_cache()  # the case's model and graph pool are gone with measure's frame
                common.log(json.dumps(r))
                rows.append(r)
    name = torch.cuda.get_device_name(0)
    lines = [f"GPU: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}. Median synchronised latency "
             f"per call, {args.rounds} alternating rounds x {args.iterations} iterations; synthetic weights.", "",
             "| variant | dtype | batch x res | eager ms | CUDA graph ms | graph speed-up | graph images/s | "
             "max abs diff |", "|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['variant'].upper()} | {r['dtype']} | {r['batch']} x {r['resolution']} | {r['eager_ms']:.3f} | "
              f"{r['graph_ms']:.3f} | {r['speedup']:.2f}x | {r['graph_ips']:.0f} | {r['max_abs_diff']:.2e} |"
              for r in rows]
    common.write_results(args.out, "gpu_cuda_graphs", "\n".join(lines),
                         {"gpu": name, "torch": torch.__version__, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
