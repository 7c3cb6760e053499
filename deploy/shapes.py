"""The shape policy: how a runner serves a stream of input sizes (after TensorRT's optimization profiles
and Triton's model configuration: a small frozen value, parsed once, passed through the one opener).

ConvMLP takes any input of 32x32 or more, so a deployment must answer a size it has never seen at once.
Two policies:

- ``dynamic`` (the default of ``serve``, ``deploy.load``, ``predict``, ``evaluate``): one dynamic-shape
  executable answers every size; a size seen ``specialize_after`` times gets an executable of its own
  (OpenVINO: a static-shape compile; TensorRT: a CUDA graph of its profile's context), made **off the
  request path** by a background worker, and used once it is ready. At most ``max_specialized`` are
  kept, least recently used first out.
- ``static`` (the default of ``benchmark``, so that its figures stay comparable): one executable per
  size, compiled on first sight, on the request path.

``specialize_after`` defaults to 3. A static OpenVINO compile costs 330 ms of CPU time and saves
7-20% per call, so it must be earned: a size seen once is noise (a stream of random sizes in [64, 512]
repeats a size with odds of about 1 in 5,000 per pair), twice can be chance, three times recurs. A
cycle of 8 sizes is specialised within its third round; ``--warmup`` specialises the sizes a user
declares before the model reports ready.

``Specializations`` is the bookkeeping every runner shares: sightings per key, which keys have an
executable, the bound, what to evict. The runner owns the executables themselves.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import OptionError

__all__ = [
    "MODES",
    "DEFAULT_SPECIALIZE_AFTER",
    "DEFAULT_MAX_SPECIALIZED",
    "DEFAULT_CACHE_BYTES",
    "ShapePolicy",
    "parse_size",
    "parse_sizes",
    "parse_bytes",
    "format_bytes",
    "format_size",
    "Specializations",
    "as_policy",
]

MODES = ("dynamic", "static")
DEFAULT_SPECIALIZE_AFTER = 3
DEFAULT_MAX_SPECIALIZED = 8
#: the on-disk cache bound: 2 GiB holds the dynamic model and the 8 specialisations of ConvMLP-S
#: (~36 MB a blob) several times over, or of L at FP32 (~170 MB a blob), on a laptop's disk
DEFAULT_CACHE_BYTES = 2 * 1024**3
MIN_SIDE = 32

#: (batch, height, width) of one input
Size = tuple[int, int, int]


@dataclass(frozen=True)
class ShapePolicy:
    """How a runner treats input sizes (see the module's docstring).

    ``warmup``: (batch, height, width) sizes specialised before the runner is ready. ``cache_bytes``:
    the bound of the runtime's on-disk cache (0: no disk cache); ``cache_dir`` None: the runtime's
    default folder.
    """

    mode: str = "dynamic"
    specialize_after: int = DEFAULT_SPECIALIZE_AFTER
    max_specialized: int = DEFAULT_MAX_SPECIALIZED
    cache_bytes: int = DEFAULT_CACHE_BYTES
    cache_dir: Path | None = None
    warmup: tuple[Size, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OptionError(f"shape policy {self.mode!r}: choose {' or '.join(MODES)}")
        if self.specialize_after < 1:
            raise OptionError(f"--specialize-after must be >= 1, got {self.specialize_after}")
        if self.max_specialized < 0:
            raise OptionError(f"--max-specialized must be >= 0, got {self.max_specialized}")
        if self.cache_bytes < 0:
            raise OptionError(f"--cache-size must be >= 0, got {self.cache_bytes}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "warmup", tuple(tuple(int(d) for d in s) for s in self.warmup))

    @classmethod
    def static(cls, **changes: Any) -> ShapePolicy:
        return cls(mode="static", **changes)

    def with_(self, **changes: Any) -> ShapePolicy:
        return replace(self, **changes)

    @property
    def dynamic(self) -> bool:
        return self.mode == "dynamic"

    @classmethod
    def of(cls, value: ShapePolicy | str | None) -> ShapePolicy:
        """A policy from itself, a mode name (``"dynamic"``, ``"static"``) or None (the default)."""
        return as_policy(value)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cache_dir"] = str(self.cache_dir) if self.cache_dir is not None else None
        d["warmup"] = [list(s) for s in self.warmup]
        return d

    def __str__(self) -> str:
        if not self.dynamic:
            return "static (one executable per size)"
        warm = f", warm-up {' '.join(format_size(s) for s in self.warmup)}" if self.warmup else ""
        return (f"dynamic (specialise a size after {self.specialize_after} sightings, at most "
                f"{self.max_specialized}{warm})")


def as_policy(value: ShapePolicy | str | None) -> ShapePolicy:
    """``value`` as a ``ShapePolicy``: a policy as is, a mode name (``"dynamic"``/``"static"``) with the
    defaults, None the default (dynamic). ``OptionError`` otherwise."""
    if value is None:
        return ShapePolicy()
    if isinstance(value, ShapePolicy):
        return value
    if isinstance(value, str):
        return ShapePolicy(mode=value.strip().lower())
    raise OptionError(f"shapes: give a ShapePolicy or one of {', '.join(MODES)}, not {type(value).__name__}")


def parse_size(text: str, *, option: str = "--warmup") -> Size:
    """``224`` (1x224x224), ``320x480`` (1x320x480), ``2x512`` (batch 2 at 512x512: a first number below
    32 cannot be a side) or ``2x320x480`` -> (batch, height, width). ``OptionError`` naming ``option``
    otherwise."""
    t = str(text).strip().lower()
    parts = t.split("x")
    if not t or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise OptionError(f"{option} {text!r}: give a size as N, HxW, BxN or BxHxW (e.g. 224, 320x480, 2x512, 2x320x480)")
    nums = [int(p) for p in parts]
    if len(nums) == 1:
        batch, h, w = 1, nums[0], nums[0]
    elif len(nums) == 2 and nums[0] < MIN_SIDE:  # no side is below 32: 2x512 is batch 2 at 512x512
        batch, h, w = nums[0], nums[1], nums[1]
    elif len(nums) == 2:
        batch, h, w = 1, nums[0], nums[1]
    else:
        batch, h, w = nums
    if batch < 1:
        raise OptionError(f"{option} {text!r}: batch must be >= 1")
    if min(h, w) < MIN_SIDE:
        raise OptionError(f"{option} {text!r}: height and width must be >= {MIN_SIDE}")
    return (batch, h, w)


def parse_sizes(items: Iterable[str] | str, *, option: str = "--warmup") -> tuple[Size, ...]:
    """Sizes given as one string (``"224 320x480"``, commas allowed) or several; duplicates kept once."""
    words = items.replace(",", " ").split() if isinstance(items, str) else [
        w for item in items for w in str(item).replace(",", " ").split()]
    out: list[Size] = []
    for w in words:
        s = parse_size(w, option=option)
        if s not in out:
            out.append(s)
    return tuple(out)


def format_size(size: Sequence[int]) -> str:
    b, h, w = size
    return f"{h}x{w}" if b == 1 else f"{b}x{h}x{w}"


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}


def parse_bytes(text: str | int, *, option: str = "--cache-size") -> int:
    """``0``, ``500M``, ``2G``, ``1.5GiB``, ``1048576`` -> bytes (binary units). ``OptionError`` otherwise."""
    if isinstance(text, int):
        if text < 0:
            raise OptionError(f"{option} must be >= 0, got {text}")
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise OptionError(f"{option} {text!r} is not a size: give bytes or a number with K, M, G or T "
                          "(e.g. 2G, 500M; 0 turns the cache off)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


K = TypeVar("K", bound=Hashable)


@dataclass
class _Entry:
    seen: int = 0
    ready: bool = False
    pending: bool = False
    evictions: int = 0  # how often its executable was dropped to keep the bound


@dataclass
class Specializations(Generic[K]):
    """Which keys (sizes; for TensorRT (profile, size)) have earned an executable of their own.

    Thread-safe bookkeeping, no executables: ``sight(key)`` counts a request and says whether the caller
    should now start making one (exactly once per key, until it is evicted); ``ready(key)`` marks it made
    and returns the keys to evict to keep the bound (least recently used first); ``use(key)`` marks a
    request served by it. ``warm(key)`` asks for one regardless of sightings (``--warmup``).

    An evicted key earns its executable again after twice the sightings it last needed
    (``specialize_after * 2**evictions``): a stream that cycles through more recurring sizes than the bound
    (16 sizes in turn, 8 kept) would otherwise evict and remake executables without end, each compile
    taking the cores from the requests; with the doubling the compiles die out, the sizes seen most stay.
    """

    specialize_after: int = DEFAULT_SPECIALIZE_AFTER
    max_specialized: int = DEFAULT_MAX_SPECIALIZED
    #: sightings are remembered for this many keys at most (a random stream must not grow memory)
    max_tracked: int = 4096
    made: int = 0
    evicted: int = 0
    #: requests for a key not tracked at the time (a size never seen, or forgotten since)
    first_sights: int = 0
    _entries: OrderedDict[Any, _Entry] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, policy: ShapePolicy) -> Specializations[Any]:
        return cls(policy.specialize_after, policy.max_specialized)

    def sight(self, key: K) -> bool:
        """Count one request for ``key``; True when the caller should start specialising it now."""
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                self.first_sights += 1
                e = self._entries[key] = _Entry()
                while len(self._entries) > self.max_tracked:
                    old = next((k for k, v in self._entries.items() if not (v.ready or v.pending)), None)
                    if old is None:
                        break
                    del self._entries[old]
            self._entries.move_to_end(key)
            e.seen += 1
            if (self.max_specialized == 0 or e.ready or e.pending
                    or e.seen < self.specialize_after * 2**e.evictions):
                return False
            e.pending = True
            return True

    def warm(self, key: K) -> bool:
        """Ask for ``key`` to be specialised now (``--warmup``); False if it is made or being made."""
        with self._lock:
            e = self._entries.setdefault(key, _Entry())
            self._entries.move_to_end(key)
            if self.max_specialized == 0 or e.ready or e.pending:
                return False
            e.pending = True
            return True

    def ready(self, key: K) -> list[K]:
        """``key``'s executable is made: mark it, and return the keys whose executables must go (LRU)."""
        with self._lock:
            e = self._entries.setdefault(key, _Entry())
            e.pending, e.ready = False, True
            self.made += 1
            self._entries.move_to_end(key)
            out: list[K] = []
            made = [k for k, v in self._entries.items() if v.ready]
            while len(made) > self.max_specialized:
                old = made.pop(0)
                gone = self._entries[old]
                gone.ready, gone.seen = False, 0
                gone.evictions += 1
                out.append(old)
            self.evicted += len(out)
            return out

    def failed(self, key: K) -> None:
        """Making ``key``'s executable failed: it stays on the generic path (no retry until evicted)."""
        with self._lock:
            e = self._entries.setdefault(key, _Entry())
            e.pending = False
            e.seen = -(10**9)  # never asks again

    def use(self, key: K) -> None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)

    def is_ready(self, key: K) -> bool:
        with self._lock:
            e = self._entries.get(key)
            return bool(e and e.ready)

    def specialized(self) -> list[K]:
        """The keys with an executable now, least recently used first."""
        with self._lock:
            return [k for k, v in self._entries.items() if v.ready]

    def pending(self) -> int:
        with self._lock:
            return sum(1 for v in self._entries.values() if v.pending)
