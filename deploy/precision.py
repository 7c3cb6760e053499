"""One vocabulary for precisions: the names a model file carries, the names a backend runs, and the
one name every report uses (human tables, JSON, CSV, Triton configs).

- A model file computes in ``fp32``, ``fp16`` (FP16 graph: FP16 convs/linears, FP32 norms), ``int8``
  (Q/DQ graph: INT8 matmuls/convs, FP16 or FP32 elsewhere) or ``bf16``.
- A backend that chooses precision at run time (OpenVINO) also takes ``auto``: its own default.
- ``f32``, ``float32``, ``f16``, ``half``, ``bfloat16`` are accepted on input and reported under their
  canonical name.

When a backend runs a graph in another precision than the graph's own (the FP32 graph on OpenVINO
BF16), the run is named ``run_precision(graph, used)``: ``bf16`` for an FP32 graph, ``int8+bf16`` for
an INT8 graph whose non-quantized layers ran in BF16.
"""

from __future__ import annotations

from .errors import OptionError

__all__ = ["PRECISIONS", "AUTO", "ALIASES", "ORDER", "canonical", "least_exact", "run_precision"]

#: what a graph or engine computes in, from most to least exact (a run is gated by the least exact)
ORDER: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
PRECISIONS = ORDER
#: a run-time choice: the backend's own default (OpenVINO: BF16 where the CPU has it)
AUTO = "auto"
ALIASES: dict[str, str] = {
    "f32": "fp32", "float32": "fp32", "float": "fp32",
    "f16": "fp16", "float16": "fp16", "half": "fp16",
    "bfloat16": "bf16",
    "i8": "int8",
}


def canonical(name: str | None) -> str | None:
    """The one name of ``name`` (``f32`` -> ``fp32``); None stays None; ``OptionError`` for unknown names."""
    if name is None:
        return None
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in ORDER and key != AUTO:
        raise OptionError(f"unknown precision {name!r}: use one of {', '.join((*ORDER, AUTO))}")
    return key


def least_exact(*precisions: str | None) -> str:
    """The least exact of ``precisions`` (unknown and None left out): ``fp32`` + ``bf16`` -> ``bf16``."""
    known = [p for p in (ALIASES.get(str(p), p) for p in precisions) if p in ORDER]
    return max(known, key=ORDER.index) if known else "fp32"


def run_precision(graph: str | None, used: str | None) -> str | None:
    """What a run computes in: the graph's precision, where the backend ran its float layers in ``used``.

    ``("fp32", "bf16")`` -> ``bf16``; ``("int8", "bf16")`` -> ``int8+bf16``; equal or unknown ``used`` ->
    the graph's own.
    """
    if used is None or used == graph:
        return graph
    if graph in (None, "fp32"):
        return used
    return f"{graph}+{used}"
