"""What ``convmlp-deploy benchmark`` adds to OpenVINO at a fixed size: its median against ``benchmark_app``'s.

Both run the same ONNX graph, at the same static shape and precision, with the LATENCY hint, 2 threads
and one synchronous request, in alternating rounds (one process each, so that each pays its own start-up
outside the timed part). Then, in this process, the same compiled shape is timed three ways in
alternation: OpenVINO's request alone (the input set once, as ``benchmark_app`` does), the request with a
new input each call (``infer({0: array})``), and the runner's ``load_input`` + ``run`` + ``fetch`` (what
the benchmark's loop times): the difference between the last two is the runner's own cost.

Writes ``openvino_harness.md`` and ``openvino_harness.json``.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

NAME = "openvino_harness"


def _parser() -> Any:
    ap = common.parser(__doc__)
    ap.add_argument("--onnx", type=Path, default=None, help="an exported graph (default: export S to a temporary folder)")
    ap.add_argument("--variant", default="s", choices=common.VARIANTS, help="the variant exported without --onnx")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--in-process-n", type=int, default=40, help="timed calls per way per round in this process")
    common.add_timing(ap, duration_s=8.0, rounds=3)
    common.add_out(ap, f"{NAME}.md", f"{NAME}.json")
    return ap


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found (it comes with the openvino wheel / this package)")
    return found


def _benchmark_app(graph: Path, args: Any, config: Path) -> dict[str, float]:
    # benchmark_app refuses -nthreads next to -hint latency (a rule of its command line, not of OpenVINO):
    # the thread count goes in through -load_config instead, as the runner sets it
    s = args.side
    cmd = [_tool("benchmark_app"), "-m", str(graph), "-shape", f"[1,3,{s},{s}]", "-hint", "latency",
           "-load_config", str(config), "-infer_precision", {"fp32": "f32", "bf16": "bf16"}[args.precision],
           "-t", str(int(args.duration_s)), "-api", "sync", "-d", "CPU"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = {}
    for key in ("Median", "Average", "Min", "Max"):
        m = re.search(rf"^\s*(?:\[ INFO \]\s*)?{key}:\s*([0-9.]+) ms", out, re.M)
        if m:
            found[key.lower()] = float(m.group(1))
    m = re.search(r"Count:\s*(\d+) iterations", out)
    if m:
        found["iterations"] = int(m.group(1))
    if "median" not in found:
        raise SystemExit(f"could not read benchmark_app's median:\n{out[-2000:]}")
    return found


def _ours(graph: Path, args: Any) -> dict[str, float]:
    cmd = [_tool("convmlp-deploy"), "benchmark", "--onnx", str(graph), "--backend", "openvino", "--precision",
           args.precision, "--threads", str(args.threads), "-r", str(args.side), "-b", "1", "--duration-s",
           str(args.duration_s), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(out[out.index("{"):])["results"][0]
    lat = res["latency_ms"]
    return {"median": float(lat["median"]), "iterations": res["iterations"],
            "runner": res["runner"]}


def _in_process(graph: Path, args: Any) -> dict[str, Any]:
    """The same static shape timed as OpenVINO's request alone, with a fresh input, and through the runner."""
    import numpy as np
    import openvino as ov

    from deploy.runners.openvino import OpenVINORunner

    shape = (1, 3, args.side, args.side)
    runner = OpenVINORunner(graph, precision=args.precision, threads=args.threads, streams=1, shapes="static",
                            cache_dir="")
    runner.activate()
    try:
        compiled = runner._compiled_for(shape)
        props = {k: str(compiled.get_property(k)) for k in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                                                             "ENABLE_CPU_PINNING", "INFERENCE_PRECISION_HINT")}
        request = compiled.create_infer_request()
        xs = [np.random.default_rng(i).standard_normal(shape, dtype=np.float32) for i in range(4)]
        request.set_input_tensor(ov.Tensor(xs[0], shared_memory=True))

        def alone(i: int) -> None:
            request.infer()

        def fresh(i: int) -> None:
            request.infer({0: xs[i % 4]})
            np.array(request.get_output_tensor(0).data, copy=True)

        def through(i: int) -> None:
            runner.run(runner.load_input(xs[i % 4]))
            runner.fetch()

        ways = {"request alone (input set once)": alone, "request, new input each call": fresh,
                "runner load_input+run+fetch": through}
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(args.rounds):
            for name, f in ways.items():
                for i in range(3):
                    f(i)
                for i in range(args.in_process_n):
                    t0 = time.perf_counter()
                    f(i)
                    times[name].append((time.perf_counter() - t0) * 1e3)
        return {"ways": {k: {"median_ms": statistics.median(v), "n": len(v)} for k, v in times.items()},
                "compiled_properties": props}
    finally:
        runner.deactivate()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(_parser(), argv)
    with tempfile.TemporaryDirectory() as tmp:
        graph = args.onnx
        if graph is None:
            common.log(f"export {args.variant}")
            subprocess.run([_tool("convmlp-deploy"), "export", "--variant", args.variant, "-o", tmp], check=True,
                           capture_output=True)
            graph = Path(tmp) / f"convmlp_{args.variant}.onnx"
        config = Path(tmp) / "benchmark_app.json"
        config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(args.threads)}}))
        app: list[dict[str, float]] = []
        ours: list[dict[str, Any]] = []
        for r in range(args.rounds):
            common.log(f"round {r + 1}/{args.rounds}: benchmark_app")
            app.append(_benchmark_app(graph, args, config))
            common.log(f"round {r + 1}/{args.rounds}: convmlp-deploy benchmark")
            ours.append(_ours(graph, args))
            common.log(f"  benchmark_app {app[-1]['median']:.2f} ms, ours {ours[-1]['median']:.2f} ms")
        common.log("in-process run path")
        inproc = _in_process(graph, args)

    ratios = [o["median"] / a["median"] for a, o in zip(app, ours, strict=True)]
    app_med = statistics.median(a["median"] for a in app)
    ours_med = statistics.median(o["median"] for o in ours)
    ratio = statistics.median(ratios)
    s = args.side
    lines = [
        "# OpenVINO at a fixed size: `convmlp-deploy benchmark` against `benchmark_app`",
        "",
        common.machine_header(),
        "",
        f"{args.variant.upper()} 1x{s}x{s} {args.precision.upper()}, LATENCY hint, {args.threads} threads, one "
        f"synchronous request, {args.duration_s:g} s each, {args.rounds} alternating rounds. Shared machine: "
        "timings are noisy; only the ratios within a round mean much.",
        "",
        "| round | benchmark_app median ms | benchmark median ms | ratio (<= 1.05) |",
        "|---:|---:|---:|---:|",
        *(f"| {i + 1} | {a['median']:.2f} | {o['median']:.2f} | {o['median'] / a['median']:.3f} |"
          for i, (a, o) in enumerate(zip(app, ours, strict=True))),
        f"| median | {app_med:.2f} | {ours_med:.2f} | {ratio:.3f} |",
        "",
        "In one process, the same compiled shape, alternating:",
        "",
        "| way | median ms | ratio to the request alone |",
        "|---|---:|---:|",
    ]
    ways = inproc["ways"]
    base = ways["request alone (input set once)"]["median_ms"]
    lines += [f"| {k} | {v['median_ms']:.2f} | {v['median_ms'] / base:.3f} |" for k, v in ways.items()]
    lines += ["", "The runner's compiled model: " + ", ".join(f"{k} {v}" for k, v in inproc["compiled_properties"].items())
              + f"; benchmark_app: -hint latency, INFERENCE_NUM_THREADS {args.threads} through -load_config."]
    data = {"machine": common.machine_info("cpu"), "versions": common.versions(),
            "settings": {"variant": args.variant, "precision": args.precision, "shape": [1, 3, s, s],
                         "threads": args.threads, "duration_s": args.duration_s, "rounds": args.rounds},
            "benchmark_app": app, "benchmark": ours, "ratios": ratios, "ratio_median": ratio,
            "in_process": inproc}
    common.write_results(args.out, NAME, "\n".join(lines), data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
