"""What this machine is: its CPU (model, the ISA flags that decide BF16/INT8), cores, GPU, and the versions
of the runtimes installed. The one reader of ``/proc/cpuinfo`` and of package versions: ``doctor``, the
benchmark reports, the exporter's records and the INT8 layout choice all ask it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

__all__ = ["CPU_FLAGS", "cpu_features", "cpu_model", "dist_version", "machine_info", "versions"]

#: /proc/cpuinfo flags that decide CPU precision: BF16 and INT8 matrix units
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
             "amx_tile")


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model and the ISA flags that matter for BF16/INT8 (``cpuinfo``: the text of /proc/cpuinfo)."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    model: str | None = None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    model = model or platform.processor() or None
    have = [f for f in CPU_FLAGS if f in flags]
    bf16 = "amx_bf16" in flags or "avx512_bf16" in flags
    return {
        "model": model,
        "flags": have,
        "bf16": bf16,
        "bf16_unit": "AMX" if "amx_bf16" in flags else "AVX512_BF16" if bf16 else None,
        "int8_unit": "AMX" if "amx_int8" in flags else "AVX512_VNNI" if "avx512_vnni" in flags
        else "AVX_VNNI" if "avx_vnni" in flags else None,
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    return cpu_features()["model"] or platform.machine() or "unknown CPU"


def dist_version(*dists: str) -> str | None:
    """The version of the first of ``dists`` that is installed (distribution names), else None."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    """Versions of Python and the runtimes (None where a package is not installed)."""
    return {
        "python": platform.python_version(),
        "torch": dist_version("torch"),
        "onnxruntime": dist_version("onnxruntime", "onnxruntime-gpu"),
        "tensorrt": dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"),
        "openvino": dist_version("openvino"),
        "numpy": dist_version("numpy"),
    }


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model and core counts; the GPU's name when ``device`` is cuda."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "gpu": None,
        "platform": platform.platform(),
    }
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
            info["cuda"] = torch.version.cuda
    return info
