"""Optimization profiles: the (min, opt, max) input shapes an engine accepts.

A profile is a small checked value object; an engine may carry several (for
example one tuned for batch 1 at 224 and one for large batches of big images).
The runner picks the covering profile whose ``opt`` is nearest the request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from convmlp.spec import INPUT_NAME

from ..errors import DeployError, OptionError

__all__ = [
    "Shape",
    "MIN_SIDE",
    "DEFAULT_PROFILE",
    "profiles_from_options",
    "parse_shape",
    "format_shape",
    "ShapeProfile",
    "select_profile",
    "validation_shapes",
    "check_input_names",
]

Shape = tuple[int, int, int, int]

MIN_SIDE = 32
CHANNELS = 3


def parse_shape(text: str) -> Shape:
    """``"1x3x128x128"`` -> ``(1, 3, 128, 128)`` (NCHW); ``ValueError`` if it is not one."""
    raw = str(text).strip().lower()
    try:
        dims = tuple(int(p) for p in raw.split("x"))
    except ValueError:
        raise OptionError(f"{text!r} is not a shape: use NxCxHxW like 8x3x224x224") from None
    if len(dims) != 4:
        raise OptionError(f"{text!r} is not a shape: need 4 dims NxCxHxW like 8x3x224x224, got {len(dims)}")
    return dims[0], dims[1], dims[2], dims[3]


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _check_shape(label: str, shape: Shape) -> None:
    b, c, h, w = shape
    if b < 1:
        raise OptionError(f"{label} shape {format_shape(shape)}: batch must be >= 1")
    if c != CHANNELS:
        raise OptionError(f"{label} shape {format_shape(shape)}: ConvMLP takes {CHANNELS} channels, got {c}")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise OptionError(f"{label} shape {format_shape(shape)}: height and width must be >= {MIN_SIDE}")


@dataclass(frozen=True)
class ShapeProfile:
    """Smallest, tuned-for and largest NCHW input; ``min <= opt <= max`` in every dim."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for label in ("min", "opt", "max"):
            value = tuple(int(d) for d in getattr(self, label))
            if len(value) != 4:
                raise OptionError(f"{label} shape must have 4 dims NxCxHxW, got {list(value)}")
            object.__setattr__(self, label, value)
            _check_shape(label, value)  # type: ignore[arg-type]
        names = ("batch", "channels", "height", "width")
        for i, name in enumerate(names):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise OptionError(
                    f"profile {self}: {name} must satisfy min <= opt <= max, "
                    f"got {self.min[i]}, {self.opt[i]}, {self.max[i]}"
                )

    def __str__(self) -> str:
        return f"{format_shape(self.min)}:{format_shape(self.opt)}:{format_shape(self.max)}"

    @classmethod
    def parse(cls, text: str) -> ShapeProfile:
        """``"1x3x128x128:8x3x224x224:32x3x512x512"`` (MIN:OPT:MAX)."""
        parts = str(text).strip().split(":")
        if len(parts) != 3:
            raise OptionError(f"{text!r} is not a profile: use MIN:OPT:MAX like 1x3x128x128:8x3x224x224:32x3x512x512")
        return cls(*(parse_shape(p) for p in parts))

    @classmethod
    def fixed(cls, shape: Shape) -> ShapeProfile:
        """A profile that accepts exactly one shape."""
        return cls(shape, shape, shape)

    def covers(self, shape: Sequence[int]) -> bool:
        """True if every dim of ``shape`` lies within ``[min, max]``."""
        if len(shape) != 4:
            return False
        return all(lo <= int(s) <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))

    def distance(self, shape: Sequence[int]) -> float:
        """How far ``shape`` is from ``opt`` (sum of absolute log-ratios per dim)."""
        return sum(abs(math.log(int(s) / o)) for s, o in zip(shape, self.opt, strict=True))

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapeProfile:
        try:
            return cls(*(tuple(int(d) for d in data[k]) for k in ("min", "opt", "max")))  # type: ignore[arg-type]
        except (KeyError, TypeError) as exc:
            raise OptionError(f"not a shape profile (need min/opt/max lists): {data!r}") from exc


#: Batch 1..32, sides 128..512, tuned for batch 8 at 224x224.
DEFAULT_PROFILE = ShapeProfile((1, 3, 128, 128), (8, 3, 224, 224), (32, 3, 512, 512))


def profiles_from_options(
    profiles: Sequence[ShapeProfile], shapes: tuple[Shape | None, Shape | None, Shape | None]
) -> list[ShapeProfile]:
    """``build``'s profiles: ``--profile`` (several), or ``--min-shape/--opt-shape/--max-shape`` (all three),
    or ``DEFAULT_PROFILE``; ``OptionError`` for a mix or a partial triple."""
    given = [s is not None for s in shapes]
    if profiles and any(given):
        raise OptionError("use either --profile or --min-shape/--opt-shape/--max-shape, not both")
    if any(given):
        if not all(given):
            raise OptionError("--min-shape, --opt-shape and --max-shape go together: give all three")
        return [ShapeProfile(*shapes)]  # type: ignore[arg-type]
    return list(profiles) or [DEFAULT_PROFILE]


def _describe(profiles: Sequence[ShapeProfile]) -> str:
    return "; ".join(f"#{i} {p}" for i, p in enumerate(profiles))


def select_profile(profiles: Sequence[ShapeProfile], shape: Sequence[int]) -> int:
    """Index of the profile that covers ``shape`` with the nearest ``opt``; DeployError if none covers."""
    covering = [i for i, p in enumerate(profiles) if p.covers(shape)]
    if not covering:
        raise DeployError(
            f"input shape {format_shape(shape)} is outside every optimization profile of this engine "
            f"(min:opt:max {_describe(profiles)}); rebuild with a profile that covers it"
        )
    return min(covering, key=lambda i: (profiles[i].distance(shape), i))


def _odd_side(lo: int, hi: int) -> int:
    """A side in [lo, hi] that is not a multiple of 32 (if one exists), about a third of the way up."""
    side = lo + (hi - lo) // 3
    for candidate in (side, side + 1, side - 1, lo + 1, hi - 1):
        if lo <= candidate <= hi and candidate % 32:
            return candidate
    return side


def validation_shapes(profiles: Iterable[ShapeProfile]) -> list[Shape]:
    """Shapes that exercise each profile: its min, opt and max, an odd-sized one
    (sides not divisible by 32) and non-square ones, all inside the profile, deduplicated."""
    out: list[Shape] = []
    for p in profiles:
        b_lo, _, h_lo, w_lo = p.min
        b_hi, _, h_hi, w_hi = p.max
        candidates: list[Shape] = [
            p.min,
            p.opt,
            p.max,
            (min(b_lo + 1, b_hi), 3, _odd_side(h_lo, h_hi), _odd_side(w_lo, w_hi)),
            (b_lo, 3, h_lo, w_hi),
            (b_lo, 3, h_hi, w_lo),
        ]
        for s in candidates:
            if p.covers(s) and s not in out:
                out.append(s)
    return out


def check_input_names(profile_input_names: Iterable[str], network_input_names: Iterable[str]) -> None:
    """Profiles must name exactly the network's inputs; DeployError saying which differ."""
    given, real = list(profile_input_names), list(network_input_names)
    unknown = [n for n in given if n not in real]
    missing = [n for n in real if n not in given]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"profile names input(s) {unknown} the network does not have")
        if missing:
            parts.append(f"network input(s) {missing} have no shape profile")
        raise DeployError(
            f"{'; '.join(parts)} (network inputs: {real}; ConvMLP graphs have one input named {INPUT_NAME!r})"
        )
