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
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..api import Model
from ..errors import BackendUnavailable, DeployError, OptionError

__all__ = ["ServeOptions", "check_pytriton", "check_serve", "serve", "default_model_name", "group_by_shape",
           "free_ports"]

INSTALL = "serve needs PyTriton: pip install 'convmlp-deploy[serve]'"


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


def _logits_fn(model: Model) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        out: list[dict[str, np.ndarray]] = [{} for _ in requests]
        for group in group_by_shape(requests):
            xs = [np.asarray(requests[i]["input"], dtype=np.float32) for i in group]
            logits = model(np.concatenate(xs))
            start = 0
            for i, x in zip(group, xs, strict=True):
                out[i] = {"logits": logits[start:start + len(x)]}
                start += len(x)
        return out

    return infer


def _image_fn(model: Model, k: int) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    import io

    from PIL import Image

    def decode(data: Any) -> Any:
        raw = bytes(data)
        try:
            with Image.open(io.BytesIO(raw)) as im:
                return im.convert("RGB")
        except Exception as exc:  # Pillow raises several classes for bytes that are not an image
            raise ValueError(f"not an image ({len(raw)} bytes): {type(exc).__name__}") from None

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        out = []
        for req in requests:
            rows = np.asarray(req["image"]).reshape(len(req["image"]), -1)
            tops = model.classify([decode(r[0]) for r in rows], top_k=k)
            out.append({
                "classes": np.array([[s.index for s in t] for t in tops], dtype=np.int32),
                "scores": np.array([[s.probability for s in t] for t in tops], dtype=np.float32),
                "labels": np.array([[(s.label or str(s.index)).encode() for s in t] for t in tops], dtype=np.bytes_),
            })
        return out

    return infer


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
        allow_metrics=True, allow_gpu_metrics=False, exit_timeout_secs=5, log_verbose=0,
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
        triton.bind(model_name=options.model_name, infer_func=[_logits_fn(model)] * options.instances,
                    inputs=[Tensor(name="input", dtype=np.float32, shape=(3, -1, -1))],
                    outputs=[Tensor(name="logits", dtype=np.float32, shape=(model.num_classes,))],
                    config=batching, strict=True)
        triton.bind(model_name=f"{options.model_name}_image", infer_func=_image_fn(model, k),
                    inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
                    outputs=[Tensor(name="classes", dtype=np.int32, shape=(k,)),
                             Tensor(name="scores", dtype=np.float32, shape=(k,)),
                             Tensor(name="labels", dtype=np.bytes_, shape=(k,))],
                    config=ModelConfig(max_batch_size=options.max_batch), strict=True)
        _start(triton, options.start_timeout_s, log)
        stop = _stop_on_signals(triton)
        try:
            if on_ready is not None:
                on_ready({"model": options.model_name, "image_model": f"{options.model_name}_image",
                          "http": f"{options.host}:{options.http_port}", "grpc": f"{options.host}:{options.grpc_port}",
                          "metrics": f"http://{options.host}:{options.metrics_port}/metrics"})
            triton.serve()
        finally:
            stop()
    finally:
        triton.stop()


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


def _stop_on_signals(triton: Any) -> Callable[[], None]:
    """SIGTERM and SIGINT stop the server (from a thread: the handler only asks); returns the restorer."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        threading.Thread(target=triton.stop, daemon=True).start()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
