"""What this machine has, and which ``convmlp-deploy`` commands (and backends) can run here."""

from __future__ import annotations

import importlib.util
import platform
import sys
from typing import Any

from ..machine import cpu_features, dist_version

__all__ = ["collect", "component_rows", "command_rows", "OPTIONAL"]

#: optional libraries, what needs them, and how to get them
OPTIONAL: dict[str, tuple[str, str]] = {
    "onnxscript": ("export --exporter dynamo (the default)", "pip install onnxscript"),
    "onnxslim": ("export --simplifier onnxslim (the default)", "pip install onnxslim"),
    "onnxsim": ("export --simplifier onnxsim", "pip install 'convmlp-deploy[onnxsim]'"),
    "onnxconverter_common": ("export --fp16", "pip install onnxconverter-common"),
    "openvino": ("--backend openvino", "pip install 'convmlp-deploy[openvino]'"),
    "matplotlib": ("benchmark --plot", "pip install 'convmlp-deploy[plot]'"),
    "tritonclient": ("triton: checks each config.pbtxt against Triton's ModelConfig schema; --endpoint",
                     "pip install 'convmlp-deploy[triton]'"),
    "pytriton": ("serve (a Triton server, PyTriton)", "pip install 'convmlp-deploy[serve]'"),
    "modelopt": ("nothing: NVIDIA ModelOpt is an alternative FP16/INT8 converter this tool does not use",
                 "not needed; on a CPU machine it would pull onnxruntime-gpu, which shadows onnxruntime (README)"),
}
_DISTS = {"onnxconverter_common": "onnxconverter-common", "modelopt": "nvidia-modelopt", "pytriton": "nvidia-pytriton"}

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
    from ..runners.onnxrt import available_providers

    providers = available_providers()
    return {"version": dist_version("onnxruntime", "onnxruntime-gpu") if providers else None, "providers": providers}


def _tensorrt() -> dict[str, Any]:
    from ..errors import BackendUnavailable
    from ..trt.version import import_tensorrt

    try:
        trt = import_tensorrt()
    except BackendUnavailable as exc:
        return {"version": None, "problem": str(exc)}
    return {"version": str(trt.__version__), "problem": None}


def _openvino() -> dict[str, Any]:
    if importlib.util.find_spec("openvino") is None:
        return {"version": None, "capabilities": []}
    from ..runners.openvino import cpu_capabilities

    return {"version": dist_version("openvino"), "capabilities": cpu_capabilities()}


def collect() -> dict[str, Any]:
    """A JSON-able report: Python, CPU, PyTorch/CUDA/GPU, runtimes, optional libraries, and per command
    whether it can run here (with the reason and the backends it can use)."""
    from ..backends import BACKENDS

    torch_info = _torch()
    ort = _onnxruntime()
    trt = _tensorrt()
    ov = _openvino()
    cpu = cpu_features()
    libs = {
        name: (dist_version(_DISTS.get(name, name)) or "installed") if importlib.util.find_spec(name) else None
        for name in OPTIONAL
    }
    has_onnx = importlib.util.find_spec("onnx") is not None
    cuda = torch_info["cuda_available"]
    have_trt = trt["version"] is not None

    usable = {
        "torch": torch_info["version"] is not None,
        "onnxruntime": bool(ort["providers"]),
        "tensorrt": have_trt and cuda,
        "openvino": ov["version"] is not None,
    }
    why_not = {
        "torch": "needs torch",
        "onnxruntime": BACKENDS["onnxruntime"].install,
        "tensorrt": trt["problem"] or "needs a CUDA GPU visible to PyTorch",
        "openvino": BACKENDS["openvino"].install,
    }

    def can(ok: bool, why: str, **extra: Any) -> dict[str, Any]:
        return {"ok": ok, "why": None if ok else why, **extra}

    def backends(reads: tuple[str, ...]) -> list[str]:
        return [n for n, b in BACKENDS.items() if b.reads in reads and usable[n]]

    file_backends = backends(("variant", "onnx", "engine"))
    onnx_backends = backends(("onnx",))
    commands = {
        "profile": can(usable["torch"], why_not["torch"]),
        "export": can(usable["torch"] and has_onnx and libs["onnxscript"] is not None,
                      "needs torch, onnx and onnxscript (pip install onnxscript)"),
        "export --fp16": can(libs["onnxconverter_common"] is not None, OPTIONAL["onnxconverter_common"][1]),
        "export --int8": can(usable["onnxruntime"], "needs onnxruntime (its quantizer and calibration runs): "
                             + why_not["onnxruntime"]),
        "export --openvino": can(usable["openvino"], why_not["openvino"]),
        "validate --onnx": can(bool(onnx_backends), why_not["onnxruntime"], backends=onnx_backends),
        "validate --engine": can(usable["tensorrt"], why_not["tensorrt"]),
        "build": can(usable["tensorrt"], why_not["tensorrt"]),
        "benchmark": can(True, "", backends=file_backends),
        "benchmark --plot": can(libs["matplotlib"] is not None, OPTIONAL["matplotlib"][1]),
        "predict": can(True, "", backends=file_backends),
        "evaluate": can(True, "", backends=file_backends),
        "triton": can(True, ""),
        "tune": can(bool(onnx_backends), why_not["onnxruntime"], backends=file_backends),
        "serve": can(libs["pytriton"] is not None and platform.machine() in ("x86_64", "aarch64"),
                     OPTIONAL["pytriton"][1] + " (Linux x86_64/aarch64, glibc >= 2.35)", backends=file_backends),
        "validate --endpoint": can(libs["tritonclient"] is not None, OPTIONAL["tritonclient"][1]),
    }
    if ov["version"] is not None:
        bf16 = "BF16" in ov["capabilities"]
        commands["--backend openvino --precision bf16"] = can(
            bf16, f"this CPU has no native BF16 for OpenVINO ({', '.join(cpu['flags']) or 'no AVX-512'})"
        )
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "torch": torch_info["version"],
        "cuda_available": cuda,
        "cuda_version": torch_info["cuda_version"],
        "gpu": torch_info["gpu"],
        "onnxruntime": ort,
        "tensorrt": trt,
        "openvino": ov,
        "libraries": libs,
        "commands": commands,
    }


def component_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """(component, status) rows for the human-readable table."""
    from ..backends import BACKENDS

    gpu, cpu, ov = report["gpu"], report["cpu"], report["openvino"]
    bf16 = f"BF16 on {cpu['bf16_unit']}" if cpu["bf16"] else "no native BF16"
    int8 = f"INT8 on {cpu['int8_unit']}" if cpu["int8_unit"] else "no INT8 dot-product unit"
    rows = [
        {"component": "python", "status": report["python"]},
        {"component": "cpu", "status": f"{cpu['model'] or 'unknown'}: {bf16}, {int8}"},
        {"component": "torch", "status": report["torch"] or "not installed"},
        {"component": "cuda", "status": report["cuda_version"] if report["cuda_available"] else "not available"},
        {"component": "gpu", "status": f"{gpu['name']} (sm {gpu['compute_capability']})" if gpu else "none"},
        {
            "component": "onnxruntime",
            "status": f"{report['onnxruntime']['version']} ({', '.join(report['onnxruntime']['providers'])})"
            if report["onnxruntime"]["version"] else "not installed",
        },
        {"component": "tensorrt", "status": report["tensorrt"]["version"] or "not installed"},
        {"component": "openvino",
         "status": f"{ov['version']} ({', '.join(ov['capabilities'])})" if ov["version"] else "not installed"},
    ]
    for name, version in report["libraries"].items():
        if name in BACKENDS:  # a runtime has a row of its own above
            continue
        what, how = OPTIONAL[name]
        rows.append({"component": name, "status": f"{version} (for {what})" if version else f"not installed: {how}"})
    return rows


def command_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, c in report["commands"].items():
        note = ("backends: " + ", ".join(c["backends"])) if c.get("backends") else (c["why"] or "")
        rows.append({"command": name, "ok": c["ok"], "note": note})
    return rows
