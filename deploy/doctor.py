"""What this machine has, and which ``convmlp-deploy`` commands can run here."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
import sys
from typing import Any

__all__ = ["collect", "component_rows", "command_rows"]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_version(*dists: str) -> str | None:
    for d in dists:
        v = _version(d)
        if v:
            return v
    return None


def _torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"version": None, "cuda_available": False, "cuda_version": None, "gpu": None}
    cuda = bool(torch.cuda.is_available())
    gpu = None
    if cuda:
        major, minor = torch.cuda.get_device_capability()
        gpu = {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
    return {"version": torch.__version__, "cuda_available": cuda, "cuda_version": torch.version.cuda, "gpu": gpu}


def _onnxruntime() -> dict[str, Any]:
    from .runners.onnxrt import available_providers

    providers = available_providers()
    return {"version": _first_version("onnxruntime", "onnxruntime-gpu") if providers else None, "providers": providers}


def _tensorrt() -> dict[str, Any]:
    from .errors import BackendUnavailable
    from .trt.version import import_tensorrt

    try:
        trt = import_tensorrt()
    except BackendUnavailable as exc:
        return {"version": None, "problem": str(exc)}
    return {"version": str(trt.__version__), "problem": None}


def collect() -> dict[str, Any]:
    """A JSON-able report: Python, PyTorch/CUDA/GPU, onnxruntime, TensorRT, optional tools, commands."""
    torch_info = _torch()
    ort = _onnxruntime()
    trt = _tensorrt()
    tools = {
        "modelopt": _version("nvidia-modelopt") if importlib.util.find_spec("modelopt") else None,
        "onnxsim": _version("onnxsim") if importlib.util.find_spec("onnxsim") else None,
        "onnxslim": _version("onnxslim") if importlib.util.find_spec("onnxslim") else None,
        "tritonclient": _version("tritonclient") if importlib.util.find_spec("tritonclient") else None,
    }
    has_onnx = importlib.util.find_spec("onnx") is not None
    cuda = torch_info["cuda_available"]
    have_trt = trt["version"] is not None

    def can(ok: bool, why: str) -> dict[str, Any]:
        return {"ok": ok, "why": None if ok else why}

    backends = ["torch"] + (["torch-cuda"] if cuda else [])
    backends += ["onnxruntime"] if ort["providers"] else []
    backends += ["onnxruntime-cuda"] if "CUDAExecutionProvider" in ort["providers"] else []
    backends += ["tensorrt"] if have_trt and cuda else []
    commands = {
        "export": can(torch_info["version"] is not None and has_onnx, "needs torch and onnx"),
        "validate --onnx": can(bool(ort["providers"]), "needs onnxruntime: pip install 'convmlp-deploy[cpu]'"),
        "build": can(have_trt and cuda, trt["problem"] or "needs a CUDA GPU visible to PyTorch"),
        "validate --engine": can(have_trt and cuda, trt["problem"] or "needs a CUDA GPU visible to PyTorch"),
        "benchmark": {"ok": True, "why": None, "backends": backends},
        "triton": can(tools["tritonclient"] is not None, "needs tritonclient: pip install 'convmlp-deploy[triton]'"),
    }
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch_info["version"],
        "cuda_available": cuda,
        "cuda_version": torch_info["cuda_version"],
        "gpu": torch_info["gpu"],
        "onnxruntime": ort,
        "tensorrt": trt,
        **tools,
        "commands": commands,
    }


def component_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """(component, status) rows for the human-readable table."""
    gpu = report["gpu"]
    return [
        {"component": "python", "status": report["python"]},
        {"component": "torch", "status": report["torch"]},
        {"component": "cuda", "status": report["cuda_version"] if report["cuda_available"] else "not available"},
        {"component": "gpu", "status": f"{gpu['name']} (sm {gpu['compute_capability']})" if gpu else "none"},
        {
            "component": "onnxruntime",
            "status": f"{report['onnxruntime']['version']} ({', '.join(report['onnxruntime']['providers'])})"
            if report["onnxruntime"]["version"] else "not installed",
        },
        {"component": "tensorrt", "status": report["tensorrt"]["version"] or "not installed"},
        *({"component": k, "status": report[k] or "not installed"} for k in ("modelopt", "onnxsim", "onnxslim", "tritonclient")),
    ]


def command_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, c in report["commands"].items():
        note = ", ".join(c["backends"]) if "backends" in c else (c["why"] or "")
        rows.append({"command": name, "ok": c["ok"], "note": note})
    return rows
