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
    python benchmarks/bench_cpp_openvino.py --variants s --rounds 2 --runs 20
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.commands.bench.report import machine_info, machine_line, versions  # noqa: E402

SHAPE = (1, 3, 224, 224)


def build(folder: Path) -> Path:
    import openvino

    sdk = Path(openvino.__file__).parent / "cmake"
    for cmd in (["cmake", "-S", str(ROOT / "deploy" / "cpp"), "-B", str(folder), f"-DOpenVINO_DIR={sdk}"],
                ["cmake", "--build", str(folder), "-j"]):
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return folder / "convmlp_ov"


def cpp(exe: Path, graph: Path, runs: int) -> float:
    res = subprocess.run([str(exe), str(graph), *map(str, SHAPE), "--repeat", str(runs + 1), "--precision", "f32"],
                         capture_output=True, text=True, check=True)
    m = re.search(r"median ([0-9.]+) ms", res.stderr)
    assert m, res.stderr
    return float(m.group(1))


def python(graph: Path, runs: int) -> float:
    from deploy.reference import sample_images
    from deploy.runners.openvino import OpenVINORunner

    x = sample_images(SHAPE, 0)
    with OpenVINORunner(graph, precision="fp32", cache_dir="") as runner:
        runner.infer(x)  # compiles for the shape
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            runner.infer(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def benchmark_app(graph: Path, runs: int) -> float:
    res = subprocess.run(["benchmark_app", "-m", str(graph), "-d", "CPU", "-hint", "latency", "-shape",
                          f"[{','.join(map(str, SHAPE))}]", "-infer_precision", "f32", "-niter", str(runs)],
                         capture_output=True, text=True, check=True)
    m = re.search(r"Median:\s+([0-9.]+) ms", res.stdout)
    assert m, res.stdout[-2000:]
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["s", "l"], choices=["s", "m", "l"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50, help="timed inferences per tool and round")
    ap.add_argument("--convmlp-ov", type=Path, default=None, help="an already built convmlp_ov")
    args = ap.parse_args()

    from convmlp.spec import io_spec
    from deploy.loader import reference_model
    from export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="bench-cpp-ov-") as tmp:
        exe = args.convmlp_ov or build(Path(tmp) / "build")
        graphs = {v: export_onnx(reference_model(v), io_spec(v), Path(tmp) / f"convmlp_{v}.onnx") for v in args.variants}
        tools = {"C++ convmlp_ov": lambda g: cpp(exe, g, args.runs), "Python OpenVINORunner": lambda g: python(g, args.runs),
                 "benchmark_app": lambda g: benchmark_app(g, args.runs)}
        names = list(tools)
        got: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            for v, g in graphs.items():
                for name in names[r % len(names):] + names[:r % len(names)]:
                    got.setdefault((v, name), []).append(tools[name](g))
        print(machine_line(machine_info("cpu"), versions()))
        print(f"| variant | {' | '.join(names)} | C++ vs Python |")
        print("| --- |" + " --- |" * (len(names) + 1))
        for v in graphs:
            med = [float(np.median(got[(v, n)])) for n in names]
            print(f"| {v.upper()} 1x224 | {' | '.join(f'{m:.2f} ms' for m in med)} | {med[1] / med[0]:.2f}x |")


if __name__ == "__main__":
    main()
