"""Serving ConvMLP from ``serve`` (PyTriton, a real Triton server): throughput and latency against concurrency.

ConvMLP-S (synthetic weights, the FP32 graph on onnxruntime inside the server) is served twice on
loopback: with dynamic batching (``--max-batch 8 --max-queue-delay-us 2000``) and without it
(``--max-batch 1``). Against each, ``benchmark --endpoint`` runs 1, 2, 4 and 8 HTTP clients, for batch-1
requests at 224x224 and for mixed shapes (224x224, 160x256, 97x131, 320x320 in turn). The in-process
runner (``OnnxRuntimeRunner``, the same graph, one thread calling it back to back) is the reference.
Clients, server and model share the machine's cores, as a co-located deployment would.

    python benchmarks/bench_serve.py                        # ~3 min on 2 cores
    python benchmarks/bench_serve.py --duration-s 2 --levels 1 4
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.commands.bench.report import machine_info, machine_line, versions  # noqa: E402
from deploy.commands.serve import free_ports  # noqa: E402

SHAPES = {"224": [(1, 3, 224, 224)],
          "mixed": [(1, 3, 224, 224), (1, 3, 160, 256), (1, 3, 97, 131), (1, 3, 320, 320)]}


def start(graph: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    import tritonclient.http as http

    http_port, grpc_port, metrics_port = free_ports(3)
    proc = subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", "serve", "--onnx", str(graph),
                             "--model-name", "convmlp", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                             "--metrics-port", str(metrics_port), *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = http.InferenceServerClient(f"127.0.0.1:{http_port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.is_model_ready("convmlp"):
                return proc, http_port
        except Exception:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("serve did not become ready")


def in_process(graph: Path, shapes: list[tuple[int, ...]], duration_s: float) -> float:
    from deploy.reference import sample_images
    from deploy.runners.onnxrt import OnnxRuntimeRunner

    xs = [sample_images(s, i) for i, s in enumerate(shapes)]
    with OnnxRuntimeRunner(graph, providers=["cpu"]) as runner:
        for x in xs:
            runner.infer(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration_s:
            runner.infer(xs[n % len(xs)])
            n += 1
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--duration-s", type=float, default=3.0)
    args = ap.parse_args()

    from convmlp.spec import io_spec
    from deploy.commands.bench.endpoint import run_concurrency
    from deploy.loader import reference_model
    from export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        graph = export_onnx(reference_model("s"), io_spec("s"), Path(tmp) / "convmlp_s.onnx")
        rows = []
        for label, extra in (("dynamic batching (max 8, 2 ms)", ["--max-batch", "8", "--max-queue-delay-us", "2000"]),
                             ("no batching (max 1)", ["--max-batch", "1"])):
            proc, port = start(graph, extra)
            try:
                for shapes_name, shapes in SHAPES.items():
                    report = run_concurrency((f"127.0.0.1:{port}", "convmlp", "http"), shapes, args.levels,
                                             duration_s=args.duration_s, warmup_s=0.5)
                    rows += [(label, shapes_name, r) for r in report.results]
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        local = {name: in_process(graph, shapes, args.duration_s) for name, shapes in SHAPES.items()}
    print(machine_line(machine_info("cpu"), versions()))
    print("| server | shapes | clients | images/s | p50 ms | p90 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, shapes_name, r in rows:
        print(f"| {label} | {shapes_name} | {r.concurrency} | {r.images_per_s:.1f} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | "
              f"{r.p99_ms:.1f} | {r.errors} |")
    for name, ips in local.items():
        print(f"| in-process OnnxRuntimeRunner | {name} | 1 | {ips:.1f} | {1e3 / ips:.1f} | | | 0 |")


if __name__ == "__main__":
    main()
