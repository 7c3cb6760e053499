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


def _triton_folders() -> set[str]:
    """The copies of model files tritonserver makes when models are loaded through its API (it writes them
    to /tmp/folderXXXXXX whatever TMPDIR says, and deletes them when it unloads the models)."""
    return {str(p) for p in Path("/tmp").glob("folder??????")}


def _workspaces() -> set[str]:
    folder = Path.home() / ".cache" / "pytriton"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture(scope="module")
def server(s_graph_pair, tmp_path_factory):
    """``convmlp-deploy serve --onnx convmlp_s.onnx --model-name convmlp`` on free loopback ports."""
    import tritonclient.http as http

    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    tmpdir = tmp_path_factory.mktemp("serve-tmpdir")  # serve's TMPDIR: empty again after SIGTERM
    before = _workspaces()
    folders_before = _triton_folders()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import cli; cli.main()", "serve", "--onnx", str(s_graph_pair["fp32"]),
             "--model-name", "convmlp", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--metrics-port", str(metrics_port), "--max-batch", "8", "--start-timeout-s", "90"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmpdir)},
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
    info = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port, "proc": proc, "log": log,
            "tmpdir": tmpdir, "folders": _triton_folders() - folders_before}
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
    # tritonserver's own HTTP frontend answers unparsable JSON with 500 before any model code runs (not ours
    # to change); everything else is a 4xx
    assert statuses.pop("garbage JSON") in (400, 500)
    assert all(400 <= s < 500 for s in statuses.values()), statuses
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


def test_every_path_gives_the_same_answer_on_each_kind_of_image(server, s_graph_pair, tmp_path):
    """The image endpoint, predict, evaluate and classify (a path and Image.open of it) agree on the top-5
    and its probabilities (1e-5) for a 16-bit PNG, an EXIF-rotated JPEG, a CMYK JPEG, a palette PNG and an
    RGBA PNG: one decoder."""
    import tritonclient.grpc as grpc
    from PIL import Image

    import deploy
    from deploy.commands.evaluate import batches, load_dataset
    from tests.image_kinds import make_image_kinds

    kinds = {k: v for k, v in make_image_kinds(tmp_path / "data" / "c0").items()
             if k in ("png16", "exif6_jpeg", "cmyk_jpeg", "palette_png", "rgba_png")}
    files = [path for path, _ in kinds.values()]
    c = grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    arr = np.array([[f.read_bytes()] for f in files], dtype=np.object_)
    inp = grpc.InferInput("image", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    res = c.infer("convmlp_image", [inp])
    served = list(zip(res.as_numpy("classes").tolist(), res.as_numpy("scores").tolist(), strict=True))

    out = CliRunner().invoke(cli.main, ["predict", *map(str, files), "--onnx", str(s_graph_pair["fp32"]), "-k", "5",
                                        "--json"])
    assert out.exit_code == 0, out.output
    predicted = [([t["index"] for t in r["top_k"]], [t["probability"] for t in r["top_k"]])
                 for r in json.loads(out.stdout)["results"]]
    with deploy.load(s_graph_pair["fp32"]) as model:
        by_path = [([t.index for t in r], [t.probability for t in r]) for r in model.classify(files)]
        opened = [Image.open(f) for f in files]
        by_image = [([t.index for t in r], [t.probability for t in r]) for r in model.classify(opened)]
        for im in opened:
            im.close()
        samples = [smp for smp in load_dataset(tmp_path / "data").samples if smp.path in files]
        order = [files.index(smp.path) for smp in samples]
        assert sorted(order) == list(range(len(files)))
        (x, _, skipped), = list(batches(samples, model.cfg, 8))
        assert not skipped
        evaluated = [(np.argsort(-row)[:5].tolist(), None) for row in model(x)]
        ref = np.concatenate([model.preprocess(files[i]) for i in order])
        np.testing.assert_array_equal(x, ref)  # evaluate feeds the model exactly what classify does
    for name, answers in (("predict", predicted), ("classify(path)", by_path), ("classify(Image)", by_image)):
        for kind, (a, b) in zip(kinds, zip(served, answers, strict=True), strict=True):
            assert a[0] == b[0], f"{kind}: NAME_image {a[0]} != {name} {b[0]}"
            np.testing.assert_allclose(a[1], b[1], atol=1e-5, err_msg=f"{kind}: {name}")
    for i, (top5, _) in zip(order, evaluated, strict=True):
        assert top5 == served[i][0], f"{list(kinds)[i]}: evaluate's top-5 differs"


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


def _bad_requests(server: dict, count: int) -> list[tuple[int, str]]:
    """``count`` bad requests over raw HTTP (the KServe v2 REST endpoint): ``(status, error)`` of each."""
    bodies = [
        ("/v2/models/convmlp_image/infer", {"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
                                                        "data": ["these bytes are not an image"]}]}),
        ("/v2/models/convmlp/infer", {"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32",
                                                  "data": [0.0] * (3 * 16 * 16)}]}),
    ]
    answers = []
    for i in range(count):
        path, body = bodies[i % len(bodies)]
        req = urllib.request.Request(f"http://127.0.0.1:{server['http']}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answers.append((resp.status, resp.read().decode()))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read().decode())["error"]))
    return answers


def test_bad_requests_are_a_4xx_with_one_line_over_http_and_grpc(server):
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    log_before = Path(server["log"]).read_text()
    answers = _bad_requests(server, 2)
    assert [code for code, _ in answers] == [400, 400], answers
    image_error, small_error = (msg for _, msg in answers)
    assert "not an image" in image_error and "16x16" in small_error and ">= 32" in small_error
    for msg in (image_error, small_error):
        assert "\n" not in msg and "Traceback" not in msg and "/" not in msg and ".py" not in msg, msg
    c = grpc.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    bad = np.array([[b"\x89PNG but no more"]], dtype=np.object_)
    inp = grpc.InferInput("image", list(bad.shape), "BYTES")
    inp.set_data_from_numpy(bad)
    with pytest.raises(InferenceServerException) as info:
        c.infer("convmlp_image", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "not an image" in info.value.message()
    assert "\n" not in info.value.message() and "Traceback" not in info.value.message()
    x = np.zeros((1, 3, 16, 16), np.float32)
    inp = grpc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        c.infer("convmlp", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "16x16" in info.value.message()
    time.sleep(0.5)
    new = Path(server["log"]).read_text()[len(log_before):]
    lines = [ln for ln in new.splitlines() if ln.strip()]
    assert len(lines) == 4 and all("bad request" in ln for ln in lines), new  # one line per bad request
    assert "Traceback" not in new


def test_a_bad_request_fails_alone_in_its_batch(torch_s, s_graph_pair):
    """The callables never raise: a bad request in a dynamic batch gets its own error, the others answers."""
    import deploy
    from deploy.commands.serve import ERROR_KEY, _image_fn, _logits_fn

    good = sample_images((2, 3, 64, 64), 1)
    with deploy.load(s_graph_pair["fp32"]) as model:
        out = _logits_fn(model, "m")([{"input": good}, {"input": np.zeros((1, 3, 16, 16), np.float32)},
                                      {"input": good[:1]}])
        with torch.no_grad():
            ref = torch_s(torch.from_numpy(good)).numpy()
        assert np.abs(out[0]["logits"] - ref).max() < 1e-3 and np.abs(out[2]["logits"] - ref[:1]).max() < 1e-3
        assert set(out[1]) == {ERROR_KEY} and out[1][ERROR_KEY][0].startswith(b"invalid_arg:")
        img = _image_fn(model, 5, "m_image")([{"image": np.array([[b"junk"]], dtype=np.object_)}])
        assert set(img[0]) == {ERROR_KEY} and b"not an image" in img[0][ERROR_KEY][0]


def test_our_own_failure_is_a_500_line_and_one_traceback_in_the_log(capsys):
    from deploy.commands.serve import ERROR_KEY, _logits_fn

    class Broken:
        class facts:
            variant, kind = "s", "classifier"

        def __call__(self, x):
            raise KeyError("a bug of ours at /srv/secret/path.py")

    out = _logits_fn(Broken(), "m")([{"input": np.zeros((1, 3, 64, 64), np.float32)}])
    text = out[0][ERROR_KEY][0].decode()
    assert text.startswith("internal:") and "KeyError" in text and "/srv" not in text
    err = capsys.readouterr().err
    assert err.count("Traceback") == 1 and "m: internal error" in err


def test_too_large_for_memory_is_a_bad_request(monkeypatch, s_graph_pair):
    import deploy
    import deploy.resources as resources
    from deploy.commands.serve import BadRequest, check_input

    with deploy.load(s_graph_pair["fp32"]) as model:
        check_input(model, np.zeros((1, 3, 64, 64), np.float32))
        monkeypatch.setattr(resources, "available_bytes", lambda device="cpu": 10 * 2**20)
        with pytest.raises(BadRequest, match="needs .* this machine has"):
            check_input(model, np.zeros((1, 3, 512, 512), np.float32))
        with pytest.raises(BadRequest, match="FP32"):
            check_input(model, np.zeros((1, 3, 64, 64), np.float64))


def test_the_stub_edit_applies_to_this_pytriton():
    import importlib.util

    from deploy.commands.serve import stub_with_error_statuses

    stub = importlib.util.find_spec("pytriton.proxy.model").origin  # imports only inside the server
    patched = stub_with_error_statuses(Path(stub).read_text())
    assert patched is not None, "PyTriton's stub changed: bad requests would be 500s again"
    compile(patched, "model.py", "exec")
    assert stub_with_error_statuses("something else") is None


def test_sigterm_stops_it_cleanly(server):
    """Last in the module: after 20 bad requests, SIGTERM ends serve within a bound, exit 0, no failure
    message, PyTriton's workspace, tritonserver's model-file copies and anything in TMPDIR gone."""
    assert {code for code, _ in _bad_requests(server, 20)} == {400}
    proc = server["proc"]
    assert server["folders"], "tritonserver made no copy of the model files: this test checks nothing"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, Path(server["log"]).read_text()[-2000:]
    assert time.monotonic() - t0 < 60
    assert not os.path.exists(f"/proc/{proc.pid}")
    log = Path(server["log"]).read_text()
    assert "exited with failure" not in log and "Traceback" not in log, log[-2000:]
    # .ses: onnxruntime's telemetry session id, written by every onnxruntime session (predict too), kept
    left = [p.name for p in Path(server["tmpdir"]).iterdir() if p.name != ".ses"]
    assert not left, left
    assert not {f for f in server["folders"] if os.path.exists(f)}
