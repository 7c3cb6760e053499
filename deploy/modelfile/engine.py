"""The sidecar ``<engine>.json`` that describes a TensorRT plan file.

The plan itself stays a plain TensorRT plan (no header of ours), so trtexec,
Triton and the C++ sample read it as is. Everything we know about how it was
built lives next to it: TensorRT and GPU it was built with, precision, model,
profiles, ONNX hash and build options.

Engines are not portable across GPU models or TensorRT versions. The documented
exceptions are hardware-compatible engines (``ampere+``: any GPU of compute
capability >= 8.0; ``same-cc``: any GPU of the same compute capability) and
version-compatible engines (later TensorRT of the same major version, and
TensorRT 10 -> 11).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_bytes
from ..errors import DeployError
from .profiles import ShapeProfile

__all__ = [
    "FORMAT_VERSION",
    "HARDWARE_COMPAT_LEVELS",
    "EngineManifest",
    "manifest_path",
    "read_manifest",
    "write_manifest",
    "max_batch",
    "utc_now",
]

FORMAT_VERSION = 1

#: CLI spelling -> TensorRT ``HardwareCompatibilityLevel`` member
HARDWARE_COMPAT_LEVELS = {"ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class EngineManifest:
    """What one engine file is and how it was built."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_version: str
    precision: str
    kind: str
    variant: str | None
    num_classes: int | None
    input_name: str
    output_names: list[str]
    profiles: list[ShapeProfile]
    onnx_sha256: str
    onnx_path: str
    build_options: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    hardware_compatibility: str | None = None
    version_compatible: bool = False
    tool_version: str = ""
    #: sha256 of the checkpoint the ONNX graph was exported from ("" for synthetic weights)
    checkpoint_sha256: str = ""
    #: the ONNX graph's metadata an engine user needs: preprocessing (mean, std, crop_pct, input_size,
    #: interpolation) and ``weights`` (``deploy.modelfile.metadata``); {} for sidecars written before it
    metadata: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [p.to_dict() for p in self.profiles]
        return {"format_version": d.pop("format_version"), **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineManifest:
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"manifest format_version {version!r} is not {FORMAT_VERSION}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["profiles"] = [ShapeProfile.from_dict(p) for p in data.get("profiles") or []]
        if not kwargs["profiles"]:
            raise ValueError("manifest lists no optimization profiles")
        meta = kwargs.get("metadata", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("manifest metadata is not an object of strings")
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ValueError(str(exc)) from None


def manifest_path(engine_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_manifest(engine_path: str | os.PathLike[str]) -> EngineManifest:
    """The sidecar of ``engine_path``; DeployError if it is missing or unreadable."""
    path = manifest_path(engine_path)
    if not path.is_file():
        raise DeployError(
            f"{path} not found: the engine's sidecar manifest is missing "
            "(build engines with 'convmlp-deploy build', which writes it next to the plan)"
        )
    try:
        return EngineManifest.from_dict(json.loads(path.read_text()))
    except (ValueError, json.JSONDecodeError) as exc:
        raise DeployError(f"{path} is not a valid engine manifest: {exc}") from None


def manifest_bytes(manifest: EngineManifest) -> bytes:
    return (json.dumps(manifest.to_dict(), indent=2) + "\n").encode()


def write_manifest(manifest: EngineManifest, engine_path: str | os.PathLike[str]) -> Path:
    """Write the sidecar of ``engine_path`` atomically; returns its path."""
    path = manifest_path(engine_path)
    atomic_write_bytes(path, manifest_bytes(manifest))
    return path


def max_batch(manifest: EngineManifest) -> int:
    """The largest batch any of the engine's profiles accepts."""
    return max(p.max[0] for p in manifest.profiles)
