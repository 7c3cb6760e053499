"""Serving ConvMLP from ``serve`` (PyTriton, a real Triton server): throughput and latency against concurrency.

ConvMLP-S (synthetic weights, the FP32 graph on onnxruntime inside the server) is served twice on
loopback: with dynamic batching (``--max-batch 8 --max-queue-delay-us 2000``) and without it
(``--max-batch 1``). Against each, ``benchmark --endpoint`` runs 1, 2, 4 and 8 HTTP clients, for batch-1
requests at 224x224 and for mixed shapes (224x224, 160x256, 97x131, 320x320 in turn). The in-process
runner (``OnnxRuntimeRunner``, the same graph, one thread calling it back to back) is the reference.
Clients, server and model share the machine's cores, as a co-located deployment would.

    python benchmarks/bench_serve.py                        # ~3 min on 2 cores
    python benchmarks/bench_serve.py --duration-s 2 --levels 1 4
    python benchmarks/bench_serve.py --cases 1x64 --levels 1 --duration-s 0.05 --out /tmp/serve   # quick check
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import ROOT

from deploy.commands.bench import Case
from deploy.commands.serve import free_ports

#: the fixed stream (``--cases``) and the mixed one
CASES = (Case(1, 224, 224),)
MIXED = [(1, 3, 224, 224), (1, 3, 160, 256), (1, 3, 97, 131), (1, 3, 320, 320)]


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


def main(argv: list[str] | None = None) -> int:
    ap = common.parser(__doc__, first_line=True)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    common.add_cases(ap, CASES)
    common.add_timing(ap, duration_s=3.0, threads=None)
    common.add_out(ap, "serve.md", "serve.json")
    args = common.parse_args(ap, argv)
    shape_sets = {f"{c.height}" if c.batch == 1 and c.height == c.width else c.label: [c.shape] for c in args.cases}
    shape_sets["mixed"] = MIXED

    from convmlp.spec import io_spec
    from deploy.commands.bench.endpoint import run_concurrency
    from deploy.loader import reference_model
    from deploy.machine import machine_info, versions
    from export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        graph = export_onnx(reference_model("s"), io_spec("s"), Path(tmp) / "convmlp_s.onnx")
        rows = []
        for label, extra in (("dynamic batching (max 8, 2 ms)", ["--max-batch", "8", "--max-queue-delay-us", "2000"]),
                             ("no batching (max 1)", ["--max-batch", "1"])):
            common.log(f"serve: {label}")
            proc, port = start(graph, extra)
            try:
                for shapes_name, shapes in shape_sets.items():
                    report = run_concurrency((f"127.0.0.1:{port}", "convmlp", "http"), shapes, args.levels,
                                             duration_s=args.duration_s, warmup_s=min(0.5, args.duration_s))
                    rows += [(label, shapes_name, r) for r in report.results]
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        local = {name: in_process(graph, shapes, args.duration_s) for name, shapes in shape_sets.items()}
    lines = [common.machine_header(), "",
             "| server | shapes | clients | images/s | p50 ms | p90 ms | p99 ms | errors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, shapes_name, r in rows:
        ms = " | ".join("-" if v is None else f"{v:.1f}" for v in (r.p50_ms, r.p90_ms, r.p99_ms))  # None: too few
        lines.append(f"| {label} | {shapes_name} | {r.concurrency} | {r.images_per_s:.1f} | {ms} | {r.errors} |")
    for name, ips in local.items():
        lines.append(f"| in-process OnnxRuntimeRunner | {name} | 1 | {ips:.1f} | {1e3 / ips:.1f} | | | 0 |")
    data = {"machine": machine_info("cpu"), "versions": versions(), "levels": args.levels,
            "duration_s": args.duration_s, "shapes": shape_sets,
            "rows": [{"server": label, "shapes": name, "clients": r.concurrency, "images_per_s": r.images_per_s,
                      "p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "p99_ms": r.p99_ms, "errors": r.errors}
                     for label, name, r in rows],
            "in_process_images_per_s": local}
    common.write_results(args.out, "serve", "\n".join(lines), data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
