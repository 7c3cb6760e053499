"""The TensorRT runner under the shape policy, on a fake TensorRT and a fake CUDA (tests/deploy/trt_fakes.py).

What is tested here is our logic: one execution context per profile whose profile is never switched,
one shared device-memory allocation, CUDA graphs per recurring size after ``specialize_after`` sightings,
bounded with least-recently-used eviction, never a stale graph, warm-up sizes, ``shape_stats``. The fakes
behave like NVIDIA's Python bindings at the calls we make and catch their misuses (a graph replayed after
its context changed or after it was destroyed, an enqueue without device memory, two contexts on one
memory at once); they prove nothing about TensorRT itself: the ``gpu`` tests in test_trt_runner.py do that.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from deploy.errors import DeployError
from deploy.runners import tensorrt as rt
from deploy.runners.tensorrt import TensorRTRunner
from deploy.shapes import ShapePolicy

from .test_trt_runner_fake import PROFILES, _sidecar
from .trt_fakes import (
    DEVICE_MEMORY,
    ExecutionContextAllocationStrategy,
    FakeContext,
    FakeTensorRT,
    fake_logits,
    write_fake_plan,
)

A = (2, 3, 96, 96)  # profile 0
B = (2, 3, 200, 200)  # profile 1
C = (1, 3, 128, 96)  # profile 0
D = (1, 3, 64, 80)  # profile 0
E = (2, 3, 224, 224)  # profile 1
BIG = (4, 3, 160, 160)  # profile 0, the largest buffers


def _fake(monkeypatch: pytest.MonkeyPatch, version: str = "10.8.0.43") -> FakeTensorRT:
    trt = FakeTensorRT(version=version).activate()
    monkeypatch.setitem(sys.modules, "tensorrt", trt.module)
    monkeypatch.setattr(rt, "cuda_ops", lambda: trt.cuda)
    monkeypatch.setattr(rt, "cuda_device", lambda index=None: ("NVIDIA H100 80GB HBM3", "9.0", "12.8"))
    return trt


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    return _fake(monkeypatch)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = write_fake_plan(tmp_path / "m.engine", PROFILES)
    _sidecar(path)
    return path


def _runner(plan: Path, **policy: object) -> TensorRTRunner:
    return TensorRTRunner(plan, cuda_graph=True, shapes=ShapePolicy(**policy))  # type: ignore[arg-type]


def _check(runner: TensorRTRunner, shape: Sequence[int], seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)
    np.testing.assert_allclose(runner.infer(x)["logits"], fake_logits(x), rtol=1e-6, atol=1e-6)


def _graph_contexts(fake: FakeTensorRT, shape: Sequence[int]) -> list[FakeContext]:
    """The contexts a graph of ``shape`` was captured on (one per capture)."""
    return [g.context for g in fake.cuda.graphs if g.shape == tuple(shape) and g.context is not None]


def _stream(seed: int, n: int) -> list[tuple[int, int, int, int]]:
    """Random sizes inside the two profiles, with a cycle of three recurring ones mixed in."""
    rng = np.random.default_rng(seed)
    cycle = [A, B, C]
    out = []
    for i in range(n):
        if i % 2:
            out.append(cycle[(i // 2) % len(cycle)])
        elif rng.random() < 0.5:
            out.append((int(rng.integers(1, 5)), 3, int(rng.integers(64, 161)), int(rng.integers(64, 161))))
        else:
            out.append((int(rng.integers(1, 3)), 3, int(rng.integers(160, 289)), int(rng.integers(160, 289))))
    return out


# ----------------------------------------------------------------------------- contexts and memory


def test_a_stream_of_sizes_never_switches_a_contexts_profile(fake: FakeTensorRT, plan: Path) -> None:
    sizes = _stream(0, 60)
    with _runner(plan, specialize_after=3, max_specialized=2) as runner:
        for seed, shape in enumerate(sizes):
            _check(runner, shape, seed)
        stats = runner.shape_stats()
        memory = runner._memory.data_ptr() if runner._memory is not None else None
    contexts = fake.contexts
    # each context selects its profile at most once, when it is made (a new one starts on profile 0)
    assert all(len(c.profiles_set) <= 1 and c.stats.profile_switches == len(c.profiles_set) for c in contexts)
    # one context per profile for the plain enqueues: the first two made, on profiles 0 and 1 in order of use
    first_profiles = [1 if s[2] > 160 else 0 for s in sizes]
    order = sorted({0, 1}, key=first_profiles.index)
    assert [c.active_optimization_profile for c in contexts[:2]] == order
    # every other context is one recurring size's, with its graph: the cycle's three sizes (bound 2, so
    # evicted and remade as the cycle turns), nothing for the random sizes seen once
    graphed = {g.shape for g in fake.cuda.graphs if g.context is not None}
    assert graphed <= {A, B, C}
    # (a context is captured again after the shared buffers grew: count contexts, not captures)
    assert len(contexts) == 2 + len({id(g.context) for g in fake.cuda.graphs if g.context is not None})
    assert stats["captured"] >= len(contexts) - 2
    # every context runs on the one shared allocation, made by the runner, of the engine's size
    assert {c.strategy for c in contexts} == {ExecutionContextAllocationStrategy.USER_MANAGED}
    assert {c.memory for c in contexts} == {memory}
    assert stats["device_memory_bytes"] == DEVICE_MEMORY and stats["profile_contexts"] == 2


@pytest.mark.parametrize(("version", "api"), [("10.0.1.6", "device_memory"), ("10.8.0.43", "set_device_memory"),
                                              ("11.1.0.6", "set_device_memory")])
def test_device_memory_is_given_through_the_installed_versions_api(
    monkeypatch: pytest.MonkeyPatch, plan: Path, version: str, api: str
) -> None:
    fake = _fake(monkeypatch, version)
    calls: list[str] = []
    original = FakeContext._give_memory

    def spy(self: FakeContext, memory: int, size: int) -> None:
        calls.append(api)
        original(self, memory, size)

    monkeypatch.setattr(FakeContext, "_give_memory", spy)
    with TensorRTRunner(plan, check_compat=False) as runner:
        for seed, shape in enumerate([A, B, A]):
            _check(runner, shape, seed)
    assert len(calls) == len(fake.contexts) == 2
    assert hasattr(fake.contexts[0], "set_device_memory") == (api == "set_device_memory")
    if version.startswith("11"):
        with pytest.raises(AttributeError):
            _ = fake.engines[-1].device_memory_size  # V1 size: gone in 11.x, the runner never asks for it


def test_an_enqueue_without_device_memory_fails(fake: FakeTensorRT, plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what the tests above rely on: a USER_MANAGED context that was given no memory cannot run
    monkeypatch.setattr(FakeContext, "_give_memory", lambda self, memory, size: None)
    with TensorRTRunner(plan) as runner:
        with pytest.raises(DeployError, match="failed to enqueue inference for input 2x3x96x96"):
            runner.infer(np.zeros(A, np.float32))


# ----------------------------------------------------------------------------- graphs per size


def test_a_graph_is_captured_only_after_k_sightings(fake: FakeTensorRT, plan: Path) -> None:
    with _runner(plan, specialize_after=3) as runner:
        captured = []
        for seed in range(6):
            _check(runner, A, seed)
            captured.append(runner.shape_stats()["captured"])
            if seed == 0:
                _check(runner, C, 100)  # another size, once: no graph
        (ctx,) = _graph_contexts(fake, A)
    assert captured == [0, 0, 1, 1, 1, 1]
    p0 = fake.contexts[0]
    assert p0.stats.plain_enqueues == 3 and p0.stats.captures == 0  # A twice + C once, on profile 0's context
    # the third A set up its own context (a plain enqueue) and captured; the next three replayed
    assert (ctx.stats.plain_enqueues, ctx.stats.captures, ctx.stats.replays) == (1, 1, 3)
    assert ctx.profiles_set == []  # profile 0: a new context's own, nothing to select


def test_graphs_are_bounded_least_recently_used_first_out(fake: FakeTensorRT, plan: Path) -> None:
    with _runner(plan, specialize_after=2, max_specialized=2) as runner:
        for i, shape in enumerate([B, B, A, A]):  # B and A earn graphs (B first: the buffers grow once)
            _check(runner, shape, i)
        _check(runner, A, 10)  # A used last: B is now the least recently used
        _check(runner, C, 11)
        _check(runner, C, 12)  # C earns a graph: B goes
        stats = runner.shape_stats()
        assert stats["specialized"] == ["2x96x96", "128x96"] and stats["evicted"] == 1
        (graph_b,) = [g for g in fake.cuda.graphs if g.shape == B]
        assert graph_b.destroyed and not any(g.destroyed for g in fake.cuda.graphs if g.shape in (A, C))
        replays_b = graph_b.replays
        _check(runner, B, 13)  # evicted: a plain enqueue on profile 1's context (the destroyed graph would raise)
        assert graph_b.replays == replays_b
        assert runner.shape_stats()["captured"] == 3
        for i in (14, 15):  # evicted once, it needs twice the sightings (4) to earn a graph again
            _check(runner, B, i)
        assert runner.shape_stats()["captured"] == 3
        _check(runner, B, 16)  # seen 4 times again: earns a new graph on a new context; A goes (LRU)
        stats = runner.shape_stats()
    assert stats["specialized"] == ["128x96", "2x200x200"] and stats["evicted"] == 2 and stats["captured"] == 4
    assert len(_graph_contexts(fake, B)) == 2 and [g.destroyed for g in fake.cuda.graphs if g.shape == A] == [True]


def test_a_moved_buffer_rebinds_and_recaptures_never_replays_stale(fake: FakeTensorRT, plan: Path) -> None:
    with _runner(plan, specialize_after=1) as runner:
        _check(runner, A, 0)  # K=1: A's context is made, set up and captured at once
        _check(runner, A, 1)  # replay
        _check(runner, BIG, 2)  # grows the shared buffers: A's context is bound to the old addresses
        _check(runner, A, 3)  # re-bound: a plain enqueue sets it up again (the old graph is dropped)
        _check(runner, A, 4)  # recaptured at the new addresses and replayed
        _check(runner, A, 5)
        stats = runner.shape_stats()
        first, second = [g for g in fake.cuda.graphs if g.shape == A]
        assert first.destroyed and not second.destroyed and first.replays == 1
    ctx_a = _graph_contexts(fake, A)
    assert len(set(map(id, ctx_a))) == 1  # the same context, captured twice
    ctx = ctx_a[0]
    assert (ctx.stats.plain_enqueues, ctx.stats.captures, ctx.stats.replays) == (2, 2, 3)
    assert stats["evicted"] == 0 and stats["captured"] == 3  # A twice, BIG once


def test_without_cuda_graph_the_policy_makes_no_graphs_but_contexts_per_profile(fake: FakeTensorRT, plan: Path) -> None:
    with TensorRTRunner(plan, shapes=ShapePolicy(specialize_after=1)) as runner:
        for seed, shape in enumerate([A, A, B, B, A]):
            _check(runner, shape, seed)
        stats = runner.shape_stats()
    assert len(fake.contexts) == 2 and not fake.cuda.graphs
    assert (stats["graphs"], stats["captured"], stats["max_specialized"], stats["first_sights"]) == (0, 0, 0, 2)


def test_static_policy_keeps_a_graph_per_profile_context(fake: FakeTensorRT, plan: Path) -> None:
    with TensorRTRunner(plan, cuda_graph=True, shapes="static") as runner:
        for seed, shape in enumerate([B, B, A, A, B, A]):  # B first: the buffers grow once
            _check(runner, shape, seed)
        stats = runner.shape_stats()
    assert len(fake.contexts) == 2  # no context per size
    assert stats["policy"] == "static" and stats["specialize_after"] is None and stats["specializations"] == 0
    assert stats["graphs"] == 2  # one per profile context, for the shape it ran last


def test_warmup_sizes_are_captured_at_activate(fake: FakeTensorRT, plan: Path) -> None:
    with _runner(plan, warmup=((2, 96, 96), (2, 200, 200))) as runner:
        stats = runner.shape_stats()
        assert sorted(stats["specialized"]) == ["2x200x200", "2x96x96"] and stats["captured"] == 2
        _check(runner, A, 0)  # the first request of a warm size replays
        _check(runner, B, 1)
        assert [g.replays for g in fake.cuda.graphs] == [1, 1]
    assert all(c.stats.plain_enqueues == 1 for c in fake.contexts)  # only the warm-up's setup enqueue


def test_a_warmup_size_outside_every_profile_is_refused(fake: FakeTensorRT, plan: Path) -> None:
    with pytest.raises(DeployError, match="2x3x512x512 is outside every optimization profile") as err:
        with _runner(plan, warmup=((2, 512, 512),)):
            pass
    assert "\n" not in str(err.value)


def test_a_failed_capture_leaves_the_size_on_plain_enqueues(
    fake: FakeTensorRT, plan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: object, graph: object, stream: object) -> object:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(type(fake.cuda), "capture", refuse)
    with _runner(plan, specialize_after=2) as runner:
        for seed in range(5):
            _check(runner, A, seed)  # every answer right, the failing capture included
        stats = runner.shape_stats()
    assert stats["failed"] == 1 and stats["graphs"] == 0 and stats["specializations"] == 0
    assert runner.capture_failures and "cannot capture a CUDA graph" in runner.capture_failures[0]
    # the size is not retried: the one failed attempt made one extra context, nothing after it
    assert len(fake.contexts) == 2 and sum(c.stats.plain_enqueues for c in fake.contexts) == 5


def test_eight_threads_on_a_mixed_stream(fake: FakeTensorRT, plan: Path) -> None:
    errors: list[BaseException] = []
    sizes = _stream(1, 40)

    def worker(index: int) -> None:
        try:
            for i, shape in enumerate(sizes[index::2] * 2):
                _check(runner, shape, 1000 * index + i)
        except BaseException as exc:  # noqa: BLE001 - ConcurrentUse or a wrong answer; reported below
            errors.append(exc)

    with _runner(plan, specialize_after=2, max_specialized=3) as runner:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        stats = runner.shape_stats()
    assert not errors, errors[0]
    assert stats["captured"] >= 3 and stats["specializations"] <= 3
