"""What an OpenVINO IR (``.xml`` + ``.bin``) written by ``export --openvino`` says about itself.

The IR is read here with the standard library's XML parser, so that commands can
plan (names, dims, metadata) without OpenVINO installed; ``deploy.modelfile.describe``
turns it into the same ``ModelFacts`` record as an ONNX graph, and only the OpenVINO
runner executes it.

``export`` writes the ONNX graph's ``metadata_props`` into the IR's ``rt_info``
under ``convmlp_deploy`` (OpenVINO's own ONNX frontend also copies them under
``framework``; that copy is the fallback for IRs converted by hand).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from convmlp.spec import NamedIO

from ..errors import DeployError

__all__ = ["IR_SECTION", "IRTensor", "IRInfo", "is_ir", "ir_bin_path", "read_ir"]

#: the ``rt_info`` section holding our metadata
IR_SECTION = "convmlp_deploy"

#: IR element types -> numpy-style names
_ELEMENTS = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "i64": "int64", "i32": "int32",
             "i8": "int8", "u8": "uint8"}


def is_ir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an OpenVINO IR (by its ``.xml`` suffix)."""
    return Path(path).suffix.lower() == ".xml"


def ir_bin_path(xml: str | os.PathLike[str]) -> Path:
    """The weights file OpenVINO reads with ``xml``: the same name with ``.bin``."""
    return Path(xml).with_suffix(".bin")


@dataclass(frozen=True)
class IRTensor:
    name: str
    dims: tuple[int, ...]  # -1 for a dynamic dim
    dtype: str  # float32, float16...


@dataclass
class IRInfo(NamedIO):
    """Inputs, outputs, layer counts and metadata of one IR."""

    path: Path
    bin_path: Path
    inputs: list[IRTensor]
    outputs: list[IRTensor]
    layers: dict[str, int]  # layer type -> count (Parameter/Const/Result left out)
    metadata: dict[str, str] = field(default_factory=dict)


def _dims(port: ET.Element | None) -> tuple[int, ...]:
    if port is None:
        return ()
    return tuple(int((d.text or "-1").strip()) for d in port.findall("dim"))


def _rt_section(root: ET.Element, name: str) -> dict[str, str]:
    section = root.find(f"rt_info/{name}")
    if section is None:
        return {}
    return {child.tag: child.get("value", "") for child in section}


def read_ir(path: str | os.PathLike[str]) -> IRInfo:
    """Read ``path`` (an IR ``.xml``); ``DeployError`` if it or its ``.bin`` is missing, unreadable, or shorter
    than the weights its layers read (a truncated ``.bin``: OpenVINO would refuse it at load)."""
    xml = Path(path)
    if not xml.is_file():
        raise DeployError(f"OpenVINO IR not found: {xml}")
    weights = ir_bin_path(xml)
    if not weights.is_file():
        raise DeployError(f"{xml}: its weights file {weights.name} is missing (an IR is the .xml and the .bin together)")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise DeployError(f"{xml}: not a readable OpenVINO IR ({exc})") from None
    if root.tag != "net" or root.find("layers") is None:
        raise DeployError(f"{xml}: not an OpenVINO IR (no <net><layers>)")

    layers = root.findall("layers/layer")
    needed = max((int(d.get("offset", "0")) + int(d.get("size", "0")) for d in root.iter("data")
                  if d.get("offset", "").isdigit() and d.get("size", "").isdigit()), default=0)
    have = weights.stat().st_size
    if have < needed:
        raise DeployError(f"{xml}: its weights file {weights.name} holds {have:,} bytes but the IR reads up to "
                          f"{needed:,} (truncated, or from another IR): export it again")
    by_id = {layer.get("id"): layer for layer in layers}
    inputs: list[IRTensor] = []
    outputs: list[IRTensor] = []
    counts: dict[str, int] = {}
    for layer in layers:
        kind = layer.get("type", "")
        if kind == "Parameter":
            port = layer.find("output/port")
            data = layer.find("data")
            elem = data.get("element_type", "f32") if data is not None else "f32"
            name = (port.get("names") if port is not None else None) or layer.get("name", "")
            inputs.append(IRTensor(name.split(",")[0], _dims(port), _ELEMENTS.get(elem, elem)))
        elif kind == "Result":
            outputs.append(_result_tensor(root, layer, by_id))
        elif kind != "Const":
            counts[kind] = counts.get(kind, 0) + 1

    meta = _rt_section(root, IR_SECTION) or _rt_section(root, "framework")
    return IRInfo(xml, weights, inputs, outputs, dict(sorted(counts.items())), meta)


def _result_tensor(root: ET.Element, layer: ET.Element, by_id: dict[str | None, ET.Element]) -> IRTensor:
    """A Result layer's tensor: its ``output_names`` (IR from OpenVINO 2024+), else the producer port's names."""
    port = layer.find("input/port")
    dims = _dims(port)
    precision = (port.get("precision", "FP32") if port is not None else "FP32").lower()
    dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(precision, precision)
    name = layer.get("output_names")
    if not name:
        edge = root.find(f"edges/edge[@to-layer='{layer.get('id')}']")
        producer = by_id.get(edge.get("from-layer")) if edge is not None else None
        if producer is not None and edge is not None:
            out = producer.find(f"output/port[@id='{edge.get('from-port')}']")
            name = out.get("names") if out is not None else None
    return IRTensor((name or layer.get("name", "output")).split(",")[0], dims, dtype)
