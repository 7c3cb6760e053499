"""The shape policy value, its parsers and the specialisation bookkeeping every runner shares."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from deploy.errors import OptionError
from deploy.shapes import (
    DEFAULT_CACHE_BYTES,
    ShapePolicy,
    Specializations,
    as_policy,
    format_bytes,
    format_size,
    parse_bytes,
    parse_size,
    parse_sizes,
)


def test_policy_defaults_and_checks() -> None:
    p = ShapePolicy()
    assert p.dynamic and p.specialize_after == 3 and p.max_specialized == 8 and p.cache_bytes == DEFAULT_CACHE_BYTES
    assert not ShapePolicy.static().dynamic
    with pytest.raises(OptionError, match="choose dynamic or static"):
        ShapePolicy(mode="lazy")
    with pytest.raises(OptionError, match="--specialize-after must be >= 1"):
        ShapePolicy(specialize_after=0)
    with pytest.raises(OptionError, match="--max-specialized must be >= 0"):
        ShapePolicy(max_specialized=-1)
    with pytest.raises(OptionError, match="--cache-size must be >= 0"):
        ShapePolicy(cache_bytes=-1)
    q = ShapePolicy(cache_dir="/tmp/x", warmup=[[1, 224, 224]])  # type: ignore[arg-type]
    assert q.cache_dir == Path("/tmp/x") and q.warmup == ((1, 224, 224),)
    assert q.to_dict()["warmup"] == [[1, 224, 224]] and q.to_dict()["cache_dir"] == "/tmp/x"
    assert "224x224" in str(q) and "static" in str(ShapePolicy.static())
    with pytest.raises(AttributeError):
        p.mode = "static"  # type: ignore[misc]


def test_as_policy_reads_modes_and_policies() -> None:
    assert as_policy(None) == ShapePolicy()
    assert as_policy("static") == ShapePolicy.static() and as_policy(" Dynamic ") == ShapePolicy()
    p = ShapePolicy(max_specialized=2)
    assert as_policy(p) is p and ShapePolicy.of("static").mode == "static"
    with pytest.raises(OptionError, match="choose dynamic or static"):
        as_policy("fast")
    with pytest.raises(OptionError, match="give a ShapePolicy"):
        as_policy(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "size"), [("224", (1, 224, 224)), ("320x480", (1, 320, 480)),
                                            ("2x512", (2, 512, 512)), ("2x320x480", (2, 320, 480)),
                                            (" 64X96 ", (1, 64, 96))])
def test_parse_size(text: str, size: tuple[int, int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "224x", "abc", "1x2x3x4", "16", "0x224", "64x16", "-224"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(OptionError, match="--warmup"):
        parse_size(text)


def test_parse_sizes_and_format() -> None:
    assert parse_sizes("224, 320x480 224") == ((1, 224, 224), (1, 320, 480))
    assert parse_sizes(["224,2x512", "96"]) == ((1, 224, 224), (2, 512, 512), (1, 96, 96))
    assert format_size((1, 320, 480)) == "320x480" and format_size((2, 64, 64)) == "2x64x64"
    with pytest.raises(OptionError, match="--sizes '12'"):
        parse_sizes("224 12", option="--sizes")


@pytest.mark.parametrize(("text", "n"), [("0", 0), ("1048576", 1048576), ("500M", 500 * 1024**2), ("2G", 2 * 1024**3),
                                         ("1.5GiB", int(1.5 * 1024**3)), ("64kb", 65536), (7, 7)])
def test_parse_bytes(text: str | int, n: int) -> None:
    assert parse_bytes(text) == n


@pytest.mark.parametrize("text", ["", "2Q", "G", "-1", "1.2.3M", "two"])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(OptionError, match="is not a size|must be >= 0"):
        parse_bytes(text)


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B" and format_bytes(2 * 1024**3) == "2.0 GiB" and format_bytes(1536) == "1.5 KiB"


def test_a_size_earns_its_executable_after_k_sightings_once() -> None:
    s: Specializations[str] = Specializations(specialize_after=3, max_specialized=2)
    assert [s.sight("a") for _ in range(5)] == [False, False, True, False, False]  # asked exactly once
    assert s.pending() == 1 and not s.is_ready("a") and s.first_sights == 1
    assert s.ready("a") == [] and s.is_ready("a") and s.pending() == 0 and s.made == 1
    assert not s.sight("a")  # made: never asked again


def test_bound_evicts_least_recently_used() -> None:
    s: Specializations[str] = Specializations(specialize_after=1, max_specialized=2)
    for k in "ab":
        assert s.sight(k)
        assert s.ready(k) == []
    s.sight("a")  # a is now more recent than b
    assert s.sight("c")
    assert s.ready("c") == ["b"] and s.specialized() == ["a", "c"] and s.evicted == 1
    assert [s.sight("b") for _ in range(3)] == [False, True, False]  # earned again, at twice the sightings


def test_a_cycle_larger_than_the_bound_stops_remaking_executables() -> None:
    """16 sizes in turn, 8 kept: without the doubling every size is remade every few cycles for ever."""
    s: Specializations[int] = Specializations(specialize_after=3, max_specialized=8)
    made_by_cycle = []
    for _ in range(200):
        for k in range(16):
            if s.sight(k):
                s.ready(k)
        made_by_cycle.append(s.made)
    assert s.made <= 16 * 7  # at most log2(200 / 3) + 1 makes per size
    assert made_by_cycle[-1] - made_by_cycle[100] <= 16  # the second half of the stream makes almost none
    assert len(s.specialized()) == 8


def test_warm_failed_and_zero_bound() -> None:
    s: Specializations[str] = Specializations(specialize_after=3, max_specialized=1)
    assert s.warm("w") and not s.warm("w")  # being made
    s.failed("w")
    assert not any(s.sight("w") for _ in range(10))  # a failed key stays on the generic path
    assert s.first_sights == 0  # warming is not a request
    off: Specializations[str] = Specializations(specialize_after=1, max_specialized=0)
    assert not off.sight("a") and not off.warm("a") and off.first_sights == 1


def test_sightings_are_bounded_and_thread_safe() -> None:
    s: Specializations[int] = Specializations(specialize_after=2, max_specialized=4, max_tracked=16)
    for k in range(100):
        s.sight(k)
    assert len(s._entries) <= 16 and s.first_sights == 100
    asked: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(200):
            if s.sight(-1):
                with lock:
                    asked.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(asked) == 1  # exactly one thread is told to make it
    assert Specializations.of(ShapePolicy(specialize_after=5, max_specialized=1)).specialize_after == 5
