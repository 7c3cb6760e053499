"""C++ against Python on OpenVINO: does the C++ sample add or remove overhead?

On the same FP32 graph, interleaved in one run, batch 1 at 224x224, FP32 inference precision, the
LATENCY hint and OpenVINO's own thread choice in all three:

- ``convmlp_ov`` (deploy/cpp, built here with CMake from the ``openvino`` wheel's SDK): the median of
  ``--repeat`` inferences after the first (which compiles for the shape), as the sample prints it;
- the Python runner (``deploy.runners.openvino.OpenVINORunner``, what ``benchmark --backend openvino``
  times): the median wall time of ``infer`` (host copy in and out included, as in C++);
- OpenVINO's ``benchmark_app`` (``-hint latency -shape [1,3,224,224] -infer_precision f32``): its median.

Each round runs every tool on every graph once, in a rotating order, so that drift hits all alike; the
table gives the median over rounds.

    python benchmarks/bench_cpp_openvino.py                      # S and L, 3 rounds, ~4 min on 2 cores
    python benchmarks/bench_cpp_openvino.py --variants s --rounds 2 --runs 20 --out /tmp/cpp
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
from common import ROOT

from deploy.commands.bench import Case

CASES = (Case(1, 224, 224),)
def build(folder: Path) -> Path:
    import openvino

    sdk = Path(openvino.__file__).parent / "cmake"
    for cmd in (["cmake", "-S", str(ROOT / "deploy" / "cpp"), "-B", str(folder), f"-DOpenVINO_DIR={sdk}"],
                ["cmake", "--build", str(folder), "-j"]):
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return folder / "convmlp_ov"


def cpp(exe: Path, graph: Path, runs: int, shape: tuple[int, ...]) -> float:
    res = subprocess.run([str(exe), str(graph), *map(str, shape), "--repeat", str(runs + 1), "--precision", "f32"],
                         capture_output=True, text=True, check=True)
    m = re.search(r"median ([0-9.]+) ms", res.stderr)
    assert m, res.stderr
    return float(m.group(1))


def python(graph: Path, runs: int, shape: tuple[int, ...]) -> float:
    from deploy.reference import sample_images
    from deploy.runners.openvino import OpenVINORunner

    x = sample_images(shape, 0)
    with OpenVINORunner(graph, precision="fp32", cache_dir="") as runner:
        runner.infer(x)  # compiles for the shape
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            runner.infer(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def benchmark_app(graph: Path, runs: int, shape: tuple[int, ...]) -> float:
    res = subprocess.run(["benchmark_app", "-m", str(graph), "-d", "CPU", "-hint", "latency", "-shape",
                          f"[{','.join(map(str, shape))}]", "-infer_precision", "f32", "-niter", str(runs)],
                         capture_output=True, text=True, check=True)
    m = re.search(r"Median:\s+([0-9.]+) ms", res.stdout)
    assert m, res.stdout[-2000:]
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__, first_line=True)
    common.add_variants(ap, ["s", "l"])
    common.add_cases(ap, CASES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50, help="timed inferences per tool and round")
    ap.add_argument("--convmlp-ov", type=Path, default=None, help="an already built convmlp_ov")
    common.add_out(ap, "cpp_openvino.md", "cpp_openvino.json")
    args = common.parse_args(ap, argv, counts=("runs",))

    from convmlp.spec import io_spec
    from deploy.loader import reference_model
    from deploy.machine import machine_info, versions
    from export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="bench-cpp-ov-") as tmp:
        common.log("build convmlp_ov" if args.convmlp_ov is None else f"use {args.convmlp_ov}")
        exe = args.convmlp_ov or build(Path(tmp) / "build")
        graphs = {v: export_onnx(reference_model(v), io_spec(v), Path(tmp) / f"convmlp_{v}.onnx") for v in args.variants}
        tools = {"C++ convmlp_ov": lambda g, n, shape: cpp(exe, g, n, shape), "Python OpenVINORunner": python,
                 "benchmark_app": benchmark_app}
        names = list(tools)
        got: dict[tuple[str, str, tuple[int, ...]], list[float]] = {}
        for r in range(args.rounds):
            for case in args.cases:
                for v, g in graphs.items():
                    common.log(f"round {r + 1}: {v} {case.label}")
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        got.setdefault((v, name, case.shape), []).append(tools[name](g, args.runs, case.shape))
    lines = [common.machine_header(), "", f"| variant | {' | '.join(names)} | C++ vs Python |",
             "| --- |" + " --- |" * (len(names) + 1)]
    rows = []
    for case in args.cases:
        for v in graphs:
            med = [float(np.median(got[(v, n, case.shape)])) for n in names]
            rows.append({"variant": v, "shape": list(case.shape), **dict(zip(names, med, strict=True)),
                         "python_over_cpp": med[1] / med[0]})
            lines.append(f"| {v.upper()} {case.batch}x{case.height} | {' | '.join(f'{m:.2f} ms' for m in med)} "
                         f"| {med[1] / med[0]:.2f}x |")
    common.write_results(args.out, "cpp_openvino", "\n".join(lines),
                         {"machine": machine_info("cpu"), "versions": versions(), "rounds": args.rounds,
                          "runs": args.runs, "median_ms": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
