"""``serve`` on a real Triton server (PyTriton), clients over HTTP and gRPC on loopback, ``--endpoint`` checks.

One server for the module (start-up ~6 s on 2 cores), stopped with SIGTERM at the end (checked: exit 0,
within a bound, no workspace left). Skips where PyTriton cannot run.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from deploy.commands.serve import free_ports
from deploy.loader import reference_model
from deploy.reference import sample_images

ROOT = Path(__file__).resolve().parents[2]


def _skip_reason() -> str | None:
    if platform.machine() != "x86_64":
        return "PyTriton ships x86_64 (and aarch64) tritonserver builds for glibc >= 2.35 only"
    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(int(p) for p in version.split(".")[:2]) < (2, 35):
        return f"PyTriton needs glibc >= 2.35 (this is {libc} {version})"
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401
    except ImportError:
        return "PyTriton is not installed: pip install 'convmlp-deploy[serve]'"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _workspaces() -> set[str]:
    folder = Path.home() / ".cache" / "pytriton"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture(scope="module")
def server(s_graph_pair, tmp_path_factory):
    """``convmlp-deploy serve --onnx convmlp_s.onnx --model-name convmlp`` on free loopback ports."""
    import tritonclient.http as http

    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    before = _workspaces()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import cli; cli.main()", "serve", "--onnx", str(s_graph_pair["fp32"]),
             "--model-name", "convmlp", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--metrics-port", str(metrics_port), "--max-batch", "8", "--start-timeout-s", "90"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    client = http.InferenceServerClient(f"127.0.0.1:{http_port}")
    deadline = time.monotonic() + 100
    while True:
        try:
            if client.is_model_ready("convmlp") and client.is_model_ready("convmlp_image"):
                break
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve did not become ready: {log.read_text()[-3000:]}")
        time.sleep(0.5)
    info = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port, "proc": proc, "log": log}
    yield info
    if proc.poll() is None:  # test_sigterm_stops_it_cleanly normally did this already
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert _workspaces() <= before


@pytest.fixture(scope="module")
def torch_s():
    return reference_model("s")


def _infer(protocol: str, port: int, x: np.ndarray, model: str = "convmlp") -> np.ndarray:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    tc = http if protocol == "http" else grpc
    c = tc.InferenceServerClient(f"127.0.0.1:{port}")
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return c.infer(model, [inp]).as_numpy("logits")


def test_eight_clients_on_both_protocols_get_pytorchs_logits(server, torch_s):
    shapes = [(1, 3, 224, 224), (2, 3, 97, 131), (1, 3, 160, 256), (3, 3, 64, 64)]
    failures: list[str] = []

    def client(k: int) -> None:
        protocol, port = ("http", server["http"]) if k % 2 == 0 else ("grpc", server["grpc"])
        for r in range(3):
            shape = shapes[(k + r) % len(shapes)]
            x = sample_images(shape, 100 * k + r)
            y = _infer(protocol, port, x)
            with torch.no_grad():
                ref = torch_s(torch.from_numpy(x)).numpy()
            rel = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
            if y.shape != ref.shape or rel > 1e-4:
                failures.append(f"client {k} {protocol} {shape}: rel L2 {rel:.2e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures


def _post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_bad_requests_leave_the_server_healthy(server, torch_s):
    import tritonclient.http as http

    port = server["http"]
    good = sample_images((1, 3, 64, 64), 0)
    four = np.zeros((1, 4, 64, 64), np.float32)
    fp64 = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP64",
                                   "data": [0.0] * (3 * 64 * 64)}]}).encode()
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 3 * 64 * 64 * 4}}]}).encode()
    short = header + b"\x00" * 100  # declares 49152 bytes of tensor data, sends 100
    statuses = {
        "4 channels": _post(port, "/v2/models/convmlp/infer", json.dumps(
            {"inputs": [{"name": "input", "shape": list(four.shape), "datatype": "FP32",
                         "data": four.ravel().tolist()}]}).encode()),
        "FP64": _post(port, "/v2/models/convmlp/infer", fp64),
        "garbage JSON": _post(port, "/v2/models/convmlp/infer", b'{"inputs": [ {"name": '),
        "short body": _post(port, "/v2/models/convmlp/infer", short,
                            {"Inference-Header-Content-Length": str(len(header)),
                             "Content-Type": "application/octet-stream"}),
        "unknown model": _post(port, "/v2/models/nope/infer", json.dumps({"inputs": []}).encode()),
    }
    c = http.InferenceServerClient(f"127.0.0.1:{port}")
    bad = np.array([[b"these bytes are not an image"]], dtype=np.object_)
    inp = http.InferInput("image", list(bad.shape), "BYTES")
    inp.set_data_from_numpy(bad)
    with pytest.raises(Exception, match="not an image"):
        c.infer("convmlp_image", [inp])
    assert all(400 <= s < 600 for s in statuses.values()), statuses
    assert c.is_server_ready() and c.is_model_ready("convmlp")
    with torch.no_grad():
        ref = torch_s(torch.from_numpy(good)).numpy()
    assert np.abs(_infer("http", port, good) - ref).max() < 1e-3  # the next good request is answered


def test_the_image_model_classifies_encoded_images(server, torch_s):
    import io

    import tritonclient.grpc as grpc
    from PIL import Image

    from convmlp import PRETRAINED_CFGS
    from convmlp.preprocess import preprocess

    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (180, 240, 3), dtype=np.uint8)) for i in range(2)]
    blobs = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, "PNG")  # lossless: the server decodes what we preprocess here
        blobs.append([buf.getvalue()])
    arr = np.array(blobs, dtype=np.object_)
    c = grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    inp = grpc.InferInput("image", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    res = c.infer("convmlp_image", [inp])
    classes = res.as_numpy("classes")
    with torch.no_grad():
        logits = torch_s(torch.from_numpy(np.concatenate([preprocess(im, PRETRAINED_CFGS["s"]) for im in images]))).numpy()
    assert classes.shape == (2, 5) and (classes[:, 0] == logits.argmax(1)).all()
    z = np.exp(logits - logits.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    assert np.allclose(res.as_numpy("scores"), np.sort(probs, axis=1)[:, ::-1][:, :5], atol=1e-4)
    assert [[int(v) for v in row] for row in res.as_numpy("labels")] == classes.tolist()  # no labels: the indices


def test_metrics_are_served(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "nv_inference_request_success" in text


def test_validate_and_benchmark_against_the_endpoint(server, make_checkpoint):
    url = f"127.0.0.1:{server['http']}"
    res = CliRunner().invoke(cli.main, ["validate", "--endpoint", url, "--model-name", "convmlp", "-v", "s"])
    assert res.exit_code == 0 and "PASSED" in res.output, res.output
    res = CliRunner().invoke(cli.main, ["validate", "--endpoint", f"127.0.0.1:{server['grpc']}", "--protocol", "grpc",
                                        "--model-name", "convmlp", "-v", "s", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["passed"]
    other = make_checkpoint("s", seed=5)  # not the served model's weights
    res = CliRunner().invoke(cli.main, ["validate", "--endpoint", url, "--model-name", "convmlp", "-v", "s",
                                        "--weights", str(other)])
    assert res.exit_code == 3 and "FAILED" in res.output
    res = CliRunner().invoke(cli.main, ["benchmark", "--endpoint", url, "--model-name", "convmlp", "--concurrency", "1",
                                        "2", "-r", "64", "96x64", "--duration-s", "1", "--warmup-ms", "100", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    assert [r["concurrency"] for r in rows] == [1, 2] and all(r["requests"] > 0 and r["errors"] == 0 for r in rows)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--endpoint", "127.0.0.1:1", "--model-name", "convmlp"], 1, "no KServe-v2 server answers"),
    (["--endpoint", "{url}", "--model-name", "nope"], 1, "has no ready model 'nope'"),
    (["--endpoint", "{url}", "--model-name", "convmlp_image"], 2, "is not a ConvMLP model"),
    (["--endpoint", "{url}"], 2, "--endpoint needs --model-name"),
])
def test_endpoint_problems_are_one_line(server, args, code, message):
    url = f"127.0.0.1:{server['http']}"
    res = CliRunner().invoke(cli.main, ["validate", *[a.format(url=url) for a in args], "-v", "s"])
    assert res.exit_code == code and message in res.output, res.output
    assert res.output.strip().count("\n") == 0


def test_setup_problems_are_one_line_before_start_up(server, s_graph_pair, make_engine, monkeypatch):
    import deploy.commands.serve as serve_mod

    res = CliRunner().invoke(cli.main, ["serve", "--onnx", str(s_graph_pair["fp32"]), "--http-port", str(server["http"]),
                                        "--grpc-port", "1", "--metrics-port", "2"])
    assert res.exit_code == 1 and f"port {server['http']}" in res.output and "not free" in res.output
    res = CliRunner().invoke(cli.main, ["serve", "--engine", str(make_engine())])
    assert res.exit_code == 1 and "tensorrt" in res.output.lower() and "Traceback" not in res.output
    seen = {}
    monkeypatch.setattr(serve_mod, "serve", lambda model, options, on_ready=None: seen.setdefault("o", options))
    res = CliRunner().invoke(cli.main, ["serve", "--onnx", str(s_graph_pair["fp32"]), "--host", "0.0.0.0"])
    assert res.exit_code == 0 and "reachable from other machines" in res.output
    assert seen["o"].host == "0.0.0.0" and seen["o"].model_name == "convmlp_s"
    monkeypatch.setitem(sys.modules, "pytriton", None)  # as without the [serve] extra
    res = CliRunner().invoke(cli.main, ["serve", "--onnx", str(s_graph_pair["fp32"])])
    assert res.exit_code == 1 and "pip install 'convmlp-deploy[serve]'" in res.output


def test_sigterm_stops_it_cleanly(server):
    """Last in the module: SIGTERM ends serve within a bound, exit 0, and PyTriton's workspace goes."""
    proc = server["proc"]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, Path(server["log"]).read_text()[-2000:]
    assert time.monotonic() - t0 < 30
    assert not os.path.exists(f"/proc/{proc.pid}")
