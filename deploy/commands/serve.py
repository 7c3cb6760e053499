"""``serve``: one ConvMLP model on a real Triton Inference Server (PyTriton), KServe v2 over HTTP and gRPC.

The model (``deploy.api.Model``: an ONNX graph, IR, engine or variant) answers two Triton models:

- ``NAME``: input ``input`` FP32 ``[-1, 3, -1, -1]``, output ``logits`` FP32 ``[-1, classes]``: the same
  I/O as the repositories ``triton`` writes, so a client written against ``serve`` works unchanged against
  NGC Triton serving them. Dynamic batching: Triton queues requests up to ``max_queue_delay_us`` and hands
  them over together; requests of the same height x width are concatenated into one batch, requests of
  different sizes are run as separate batches (never padded, never mixed).
- ``NAME_image``: input ``image`` (BYTES, one encoded image per row: JPEG, PNG...), outputs ``classes``
  (INT32), ``scores`` (FP32 probabilities) and ``labels`` (BYTES) of the top ``k``: preprocessing on the
  server, from the model's metadata, as ``predict`` does.

Triton checks every request against these configs before any Python runs (wrong channel count, dtype,
a missing batch axis, byte-size mismatches, unknown models); an error raised while answering fails that
request only. The server binds 127.0.0.1 unless told otherwise, exposes Triton's ready/live endpoints and
Prometheus metrics, stops cleanly on SIGTERM and SIGINT (PyTriton removes its workspace), and gives up
after a start-up time limit with one line.

One trap, handled here: on a Python whose libpython is shared (pyenv builds), PyTriton's Python-backend
stub loads the system's ``libpython3.x.so`` under this interpreter's standard library and model loading
fails; putting this interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (inherited by the server) fixes it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..api import Model
from ..errors import BackendUnavailable, DeployError, OptionError, one_line

__all__ = ["ServeOptions", "BadRequest", "check_pytriton", "check_serve", "check_input", "serve", "default_model_name",
           "group_by_shape", "free_ports", "served_parameters", "stub_with_error_statuses"]

INSTALL = "serve needs PyTriton: pip install 'convmlp-deploy[serve]'"

#: what tritonserver gets, on SIGTERM, to close client connections and finish what is in flight (below)
EXIT_TIMEOUT_S = 5


@dataclass(frozen=True)
class ServeOptions:
    model_name: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    max_queue_delay_us: int = 2000
    instances: int = 1
    top_k: int = 5
    start_timeout_s: float = 120.0

    @property
    def ports(self) -> dict[str, int]:
        return {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}


def default_model_name(model: Model) -> str:
    """The artifact's name made Triton-safe: ``convmlp_s.fp16.onnx`` -> ``convmlp_s_fp16``."""
    stem = model.name
    for suffix in (".onnx", ".xml", ".engine", ".plan", ".trt"):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem.replace(".openvino", "")) or "convmlp"


def check_pytriton() -> None:
    """``BackendUnavailable`` (exit 1) naming the extra when PyTriton cannot be imported."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise BackendUnavailable(INSTALL) from None


def check_serve(options: ServeOptions) -> None:
    """What must hold before start-up: PyTriton importable (``BackendUnavailable``), a valid name, free
    ports (``DeployError`` naming the port)."""
    check_pytriton()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", options.model_name):
        raise OptionError(f"--model-name {options.model_name!r}: use letters, digits, '_', '-' and '.'")
    ports = list(options.ports.items())
    if len({p for _, p in ports}) != len(ports):
        raise OptionError(f"the ports must differ: {', '.join(f'{k} {v}' for k, v in ports)}")
    for flag, port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((options.host, port))
            except OSError as exc:
                raise DeployError(f"port {port} on {options.host} ({flag}) is not free ({exc.strerror or exc}): "
                                  f"stop what uses it or give another {flag}") from None


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the OS reports free on ``host`` now (for tests and benchmarks on loopback)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def group_by_shape(requests: list[Any], name: str = "input") -> list[list[int]]:
    """Indices of ``requests`` grouped by their input's height x width (order kept): what may be one batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(tuple(np.asarray(req[name]).shape[1:]), []).append(i)
    return list(groups.values())


class BadRequest(OptionError):
    """A request the served model cannot take (not an image, too small, too large for memory): a 4xx."""


#: the output key a response carries instead of its tensors when that request failed (``_stub_patches``)
ERROR_KEY = "convmlp_error"


def _log(line: str) -> None:
    """One line on the server's stderr (its log)."""
    print(f"serve: {line}", file=sys.stderr, flush=True)


def _failed(code: str, message: str) -> dict[str, np.ndarray]:
    return {ERROR_KEY: np.array([f"{code}:{one_line(message)}".encode()], dtype=np.bytes_)}


def _refuse(model_name: str, exc: BaseException) -> dict[str, np.ndarray]:
    """The response of a bad request: its one line to the client (400) and to the log."""
    _log(f"{model_name}: bad request: {one_line(exc)}")
    return _failed("invalid_arg", str(exc))


def _internal(model_name: str, exc: BaseException) -> dict[str, np.ndarray]:
    """Our own failure: one line to the client (500), the traceback to the log, once."""
    _log(f"{model_name}: internal error: {one_line(exc)}")
    traceback.print_exception(exc, file=sys.stderr)
    return _failed("internal", f"internal error in the model ({type(exc).__name__}); see the server log")


def check_input(model: Model, x: np.ndarray) -> None:
    """``BadRequest`` for an ``input`` ``model`` cannot take: not FP32 N x 3 x H x W, a side below 32, or
    a batch that would not fit in this machine's memory (Triton checks dtype, rank and channels first)."""
    from convmlp.preprocess import MIN_SIDE

    from ..resources import TooLarge, check_fits

    if x.dtype != np.float32 or x.ndim != 4 or x.shape[1] != 3:
        raise BadRequest(f"input must be FP32 [batch, 3, H, W], got {x.dtype} {list(x.shape)}")
    n, _, h, w = x.shape
    if min(h, w) < MIN_SIDE:
        raise BadRequest(f"input is {h}x{w}; ConvMLP needs height and width >= {MIN_SIDE}")
    try:
        check_fits(model.facts.variant, [(n, h, w)], features=model.facts.kind == "features")
    except TooLarge as exc:
        raise BadRequest(str(exc)) from None


def _logits_fn(model: Model, name: str) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        out: list[dict[str, np.ndarray]] = [{} for _ in requests]
        good = []
        for i, req in enumerate(requests):  # a bad request fails alone, not its batch-mates
            try:
                check_input(model, np.asarray(req["input"]))
                good.append(i)
            except BadRequest as exc:
                out[i] = _refuse(name, exc)
        for group in group_by_shape([requests[i] for i in good]):
            idx = [good[j] for j in group]
            xs = [np.asarray(requests[i]["input"], dtype=np.float32) for i in idx]
            try:
                logits = model(np.concatenate(xs))
            except OptionError as exc:  # a size outside an engine's profiles, say
                for i in idx:
                    out[i] = _refuse(name, exc)
                continue
            except Exception as exc:
                for i in idx:
                    out[i] = _internal(name, exc)
                continue
            start = 0
            for i, x in zip(idx, xs, strict=True):
                out[i] = {"logits": logits[start:start + len(x)]}
                start += len(x)
        return out

    return infer


def _image_fn(model: Model, k: int, name: str) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    from convmlp.preprocess import ImageError, load_image

    def decode(row: int, data: Any) -> Any:
        try:
            return load_image(bytes(data))  # the one decoder predict, evaluate and classify use
        except ImageError as exc:
            raise BadRequest(f"image {row}: {exc}") from None

    def answer(req: Any) -> dict[str, np.ndarray]:
        rows = np.asarray(req["image"]).reshape(len(req["image"]), -1)
        images = [decode(i, r[0]) for i, r in enumerate(rows)]
        tops = model.classify(images, top_k=k)
        return {
            "classes": np.array([[s.index for s in t] for t in tops], dtype=np.int32),
            "scores": np.array([[s.probability for s in t] for t in tops], dtype=np.float32),
            "labels": np.array([[(s.label or str(s.index)).encode() for s in t] for t in tops], dtype=np.bytes_),
        }

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        out = []
        for req in requests:
            try:
                out.append(answer(req))
            except (BadRequest, OptionError) as exc:
                out.append(_refuse(name, exc))
            except Exception as exc:
                out.append(_internal(name, exc))
        return out

    return infer


# PyTriton 0.7.0 (pinned in pyproject.toml) turns any exception of an inference callable into a
# TritonModelException inside its Python-backend stub: HTTP 500 / gRPC INTERNAL, the body both processes'
# tracebacks with server paths, ~20 lines of warning per request on stderr. PyTritonUnrecoverableError
# also shuts the server down; PyTritonValidationError and the others are configuration errors. None of
# them gives a 4xx. The python backend itself does: a response built with ``TritonError(message,
# TritonError.INVALID_ARG)`` is a 400 (gRPC INVALID_ARGUMENT) with that one message, and fails that request
# only. So the callables above never raise: a failed request's response carries ``ERROR_KEY`` and these
# two edits of the stub PyTriton copies into the model store turn it into such a response.
_STUB_ERRORS = '''

def _convmlp_error_response(text):
    code, _, message = text.partition(":")
    codes = {"invalid_arg": pb_utils.TritonError.INVALID_ARG}
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(message, codes.get(code, pb_utils.TritonError.INTERNAL)))


def _convmlp_failed_batch(payload):
    last = [ln for ln in payload.decode("utf-8", "replace").splitlines() if ln.strip()][-1:] or ["Error"]
    kind = last[0].split(":", 1)[0].rsplit(".", 1)[-1].strip()[:80]
    return _convmlp_error_response(f"internal:internal error in the model server ({kind}); see the server log")
'''
_STUB_PATCHES = (
    ("    if response.data is not None:\n        only_requested",
     f"    if response.data is not None:\n        if {ERROR_KEY!r} in response.data:\n"
     f"            return _convmlp_error_response(bytes(response.data[{ERROR_KEY!r}].reshape(-1)[0]).decode())\n"
     "        only_requested"),
    ("                    triton_responses_or_error = pb_utils.TritonModelException(  # pytype: disable=module-attr\n"
     "                        responses_payload.decode(\"utf-8\")\n                    )",
     "                    triton_responses_or_error = [_convmlp_failed_batch(responses_payload) for _ in triton_requests]"),
)


def stub_with_error_statuses(source: str) -> str | None:
    """PyTriton's stub ``model.py`` with per-request error statuses (above); ``None`` if it is not 0.7.0's."""
    for old, new in _STUB_PATCHES:
        if source.count(old) != 1:
            return None
        source = source.replace(old, new)
    return source + _STUB_ERRORS


def _bound(triton: Any, name: str) -> Any:
    """PyTriton's record of the model bound as ``name`` (0.7.0 has no public accessor)."""
    return next(m for m in triton._model_manager.models if m.model_name == name)


def _customise(triton: Any, name: str, parameters: dict[str, str]) -> bool:
    """Publish ``parameters`` in ``name``'s model config and give its stub error statuses; False when this
    PyTriton's stub is not the one ``stub_with_error_statuses`` knows (then errors stay 500s)."""
    model = _bound(triton, name)
    model._get_triton_model_config().backend_parameters.update(parameters)  # generated config.pbtxt reads these
    files = model.get_proxy_model_files()
    key = f"file:{model.model_version}/model.py"
    patched = stub_with_error_statuses(files[key].decode())
    if patched is None:
        return False
    files[key] = patched.encode()
    model.get_proxy_model_files = lambda: dict(files)
    return True


def served_parameters(model: Model) -> dict[str, str]:
    """What a client reads back from the model config (``runners.endpoint.describe_endpoint``): the precision
    that runs, the variant, the backend."""
    facts = {"precision": model.precision, "variant": model.facts.variant, "backend": model.backend}
    return {f"convmlp_{k}": str(v) for k, v in facts.items() if v}


def _libpython_first() -> None:
    """Put this interpreter's shared libpython first for the server's Python-backend stub (module doc)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and (not paths or paths[0] != libdir):
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *[p for p in paths if p != libdir]])


def serve(model: Model, options: ServeOptions, *, on_ready: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Serve ``model`` until SIGTERM or SIGINT (or the server dies); returns after a clean stop."""
    check_serve(options)
    model.facts.require_classifier("serve")
    _libpython_first()
    from pytriton.triton import Triton, TritonConfig

    logs = Path(tempfile.mkdtemp(prefix="convmlp-serve-"))  # tritonserver's log: not on our stdout
    config = TritonConfig(
        http_address=options.host, http_port=options.http_port, grpc_address=options.host,
        grpc_port=options.grpc_port, metrics_address=options.host, metrics_port=options.metrics_port,
        allow_metrics=True, allow_gpu_metrics=False, exit_timeout_secs=EXIT_TIMEOUT_S, log_verbose=0,
        log_file=logs / "tritonserver.log",
    )
    try:
        _serve(Triton(config=config), model, options, on_ready, logs / "tritonserver.log")
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _serve(triton: Any, model: Model, options: ServeOptions, on_ready: Callable[[dict[str, Any]], None] | None,
           log: Path) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    batching = ModelConfig(max_batch_size=options.max_batch,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=options.max_queue_delay_us))
    k = min(options.top_k, model.num_classes)
    try:
        name, image_name = options.model_name, f"{options.model_name}_image"
        # strict=False: a failed request's response is ERROR_KEY, not the outputs of the config
        triton.bind(model_name=name, infer_func=[_logits_fn(model, name) for _ in range(options.instances)],
                    inputs=[Tensor(name="input", dtype=np.float32, shape=(3, -1, -1))],
                    outputs=[Tensor(name="logits", dtype=np.float32, shape=(model.num_classes,))],
                    config=batching, strict=False)
        triton.bind(model_name=image_name, infer_func=_image_fn(model, k, image_name),
                    inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
                    outputs=[Tensor(name="classes", dtype=np.int32, shape=(k,)),
                             Tensor(name="scores", dtype=np.float32, shape=(k,)),
                             Tensor(name="labels", dtype=np.bytes_, shape=(k,))],
                    config=ModelConfig(max_batch_size=options.max_batch), strict=False)
        parameters = served_parameters(model)
        if not all([_customise(triton, name, parameters), _customise(triton, image_name, parameters)]):
            _log("this PyTriton's stub is not 0.7.0's: bad requests are answered with 500, not 400")
        _start(triton, options.start_timeout_s, log)
        stop = _stop_on_signals(triton)
        try:
            if on_ready is not None:
                on_ready({"model": options.model_name, "image_model": f"{options.model_name}_image",
                          "http": f"{options.host}:{options.http_port}", "grpc": f"{options.host}:{options.grpc_port}",
                          "metrics": f"http://{options.host}:{options.metrics_port}/metrics",
                          "shapes": model.info().get("shapes")})  # the shape policy, after its warm-up
            triton.serve()
        finally:
            stop()
    finally:
        stop_cleanly(triton)


class _StartTimeout(Exception):
    pass


def _last_error(log: Path) -> str:
    """``; tritonserver: <its last error line>`` from its log, or ``""``."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("E")]
    except OSError:
        return ""
    return f"; tritonserver: {lines[-1].split('] ', 1)[-1][:200]}" if lines else ""


def _start(triton: Any, timeout_s: float, log: Path) -> None:
    """``triton.run()`` (server up, models loaded) within ``timeout_s``; ``DeployError`` naming the cause.

    ``run()`` stays in this thread (PyTriton's model proxies die with the thread that started them); the
    time limit is an interval timer whose handler interrupts it (main thread only; elsewhere no limit).
    """
    timed = threading.current_thread() is threading.main_thread()

    def expire(signum: int, frame: Any) -> None:
        raise _StartTimeout

    previous = signal.signal(signal.SIGALRM, expire) if timed else None
    if timed:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        triton.run()
    except _StartTimeout:
        raise DeployError(f"Triton did not become ready within {timeout_s:g} s (its Python-backend stub did not load "
                          f"the models; on a Python without a shared libpython it cannot){_last_error(log)}") from None
    except Exception as exc:  # PyTriton and tritonserver raise their own classes
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DeployError(f"Triton did not start: {first}{_last_error(log)}") from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def stop_cleanly(triton: Any) -> None:
    """Unload the models through the server's API, then stop the server (PyTriton stops it first).

    Why: on SIGINT tritonserver first waits for every open HTTP connection to close, *then* unloads the
    models, all within one exit timeout. A client that keeps its connection alive (tritonclient's HTTP
    client does; so did the client that had sent the bad requests) uses up that whole timeout; tritonserver
    then exits with status 1 without unloading anything ("Exit timeout expired": PyTriton prints "Triton
    Inference Server exited with failure"), kills the Python-backend stubs (shared memory leaks) and never
    deletes the copies of the model files it made when PyTriton loaded them through its API
    (``/tmp/folderXXXXXX``). Unloaded first, the models go while the server still runs, whatever the
    clients do; the exit timeout is then only the wait for connections, and tritonserver exits 0.
    """
    try:
        triton._model_manager.clean()  # PyTriton 0.7.0: our handlers stop, each model is unloaded by the server
    except Exception as exc:  # the server died meanwhile: stopping is all that is left
        _log(f"could not unload the models before stopping ({one_line(exc)})")
    triton.stop()


def _stop_on_signals(triton: Any) -> Callable[[], None]:
    """SIGTERM and SIGINT stop the server (from a thread: the handler only asks); returns the restorer."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        threading.Thread(target=stop_cleanly, args=(triton,), daemon=True).start()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
