"""Graph simplification with a guard: never ship a graph that grew or lost a dynamic dim."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import onnx

from convmlp.spec import IOSpec
from deploy.machine import dist_version

from .errors import ExportError
from .onnx import check_dynamic

__all__ = ["SIMPLIFIERS", "SimplifyResult", "simplify"]

SIMPLIFIERS = ("onnxslim", "onnxsim", "none")


@dataclass
class SimplifyResult:
    """What the simplifier did and whether its graph was kept."""

    simplifier: str
    version: str | None
    nodes_before: int
    nodes_after: int
    accepted: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(name: str, proto: onnx.ModelProto) -> onnx.ModelProto:
    if name == "onnxslim":
        try:
            import onnxslim
        except ImportError:
            raise ExportError("--simplifier onnxslim: onnxslim is not installed (pip install onnxslim)") from None
        return onnxslim.slim(proto)
    if name == "onnxsim":
        try:
            import onnxsim
        except ImportError:
            raise ExportError(
                "--simplifier onnxsim: onnxsim is not installed (pip install 'convmlp-deploy[onnxsim]')"
            ) from None
        simplified, ok = onnxsim.simplify(proto)
        if not ok:
            raise ExportError("onnxsim could not verify its simplified graph")
        return simplified
    raise ExportError(f"unknown simplifier {name!r}: choose one of {', '.join(SIMPLIFIERS)}")


def simplify(proto: onnx.ModelProto, spec: IOSpec, simplifier: str) -> tuple[onnx.ModelProto, SimplifyResult]:
    """Simplify ``proto``; keep the original when the result is larger or lost a dynamic dim.

    The numerical parity of whatever graph is kept is checked afterwards by the
    export pipeline's validation, like every graph it writes.
    """
    before = len(proto.graph.node)
    if simplifier == "none":
        return proto, SimplifyResult("none", None, before, before, False, "simplification off")
    version = dist_version(simplifier)
    try:
        out = _run(simplifier, proto)
    except ExportError:
        raise
    except Exception as exc:  # a simplifier crash must not lose the export
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return proto, SimplifyResult(simplifier, version, before, before, False, f"simplifier failed: {msg}")
    after = len(out.graph.node)
    if after > before:
        return proto, SimplifyResult(
            simplifier, version, before, after, False, f"rejected: graph grew from {before} to {after} nodes"
        )
    try:
        check_dynamic(out, spec)
    except ExportError as exc:
        return proto, SimplifyResult(simplifier, version, before, after, False, f"rejected: {exc}")
    return out, SimplifyResult(simplifier, version, before, after, True, "kept")
