"""The TensorRT runner's own logic, on a fake TensorRT and a fake CUDA (tests/deploy/trt_fakes.py).

What is tested here is our code: the CUDA-graph cache, the lock, the host-code decision,
how refusals of the bindings become DeployErrors. The fakes raise and return what NVIDIA's
Python bindings do at those calls; they prove nothing about TensorRT itself (that is the
``gpu`` tests' job, in test_trt_runner.py).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from deploy.errors import DeployError
from deploy.modelfile.engine import EngineManifest, write_manifest
from deploy.modelfile.profiles import ShapeProfile
from deploy.runners import tensorrt as rt
from deploy.runners.tensorrt import TensorRTRunner

from .trt_fakes import CLASSES, FakeContext, FakeTensorRT, StaleGraph, fake_logits, write_fake_plan

PROFILES = [
    ((1, 3, 64, 64), (2, 3, 128, 128), (4, 3, 160, 160)),
    ((1, 3, 160, 160), (2, 3, 224, 224), (2, 3, 288, 288)),
]
A = (2, 3, 96, 96)  # profile 0
B = (2, 3, 200, 200)  # profile 1
C = (1, 3, 128, 96)  # profile 0, another shape
BIG = (4, 3, 160, 160)  # profile 0, the largest buffers


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    trt = FakeTensorRT().activate()
    monkeypatch.setitem(sys.modules, "tensorrt", trt.module)
    monkeypatch.setattr(rt, "cuda_ops", lambda: trt.cuda)
    monkeypatch.setattr(rt, "cuda_device", lambda index=None: ("NVIDIA H100 80GB HBM3", "9.0", "12.8"))
    return trt


def _sidecar(plan: Path, *, version_compatible: bool = False, tensorrt_version: str = "10.8.0.43") -> Path:
    manifest = EngineManifest(
        tensorrt_version=tensorrt_version, gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        cuda_version="12.8", precision="fp32", kind="classifier", variant="s", num_classes=CLASSES,
        input_name="input", output_names=["logits"], profiles=[ShapeProfile(*p) for p in PROFILES],
        onnx_sha256="0" * 64, onnx_path="s.onnx", version_compatible=version_compatible,
    )
    return write_manifest(manifest, plan)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = write_fake_plan(tmp_path / "m.engine", PROFILES)
    _sidecar(path)
    return path


def _x(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _check(runner: TensorRTRunner, shape: tuple[int, ...], seed: int) -> None:
    x = _x(shape, seed)
    np.testing.assert_allclose(runner.infer(x)["logits"], fake_logits(x), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- the fakes themselves


def test_fake_refuses_a_stale_graph_and_captured_setup(fake: FakeTensorRT, plan: Path) -> None:
    """What the cache tests below rely on: the fake catches the two misuses of CUDA graphs."""
    with TensorRTRunner(plan, cuda_graph=True, shapes="static") as runner:
        _check(runner, A, 0)
        _check(runner, A, 1)  # captured + replayed
        graph = fake.cuda.graphs[-1]
        ctx = fake.context
        ctx.set_input_shape("input", C)  # reconfigure behind the graph's back
        with pytest.raises(StaleGraph):
            graph.replay()
        stream = fake.cuda.new_stream()
        capture = fake.cuda.new_graph()
        with pytest.raises(RuntimeError, match="capturing"):
            with fake.cuda.capture(capture, stream):
                assert ctx.execute_async_v3(stream.cuda_stream) is False  # first enqueue after setup


# ----------------------------------------------------------------------------- CUDA graphs


def test_one_shape_is_captured_once_then_replayed(fake: FakeTensorRT, plan: Path) -> None:
    with TensorRTRunner(plan, cuda_graph=True, shapes="static") as runner:
        for seed in range(5):
            _check(runner, A, seed)  # new data each time: the replay reads the buffer, not a snapshot
        stats = fake.context.stats
    assert (stats.plain_enqueues, stats.captures, stats.replays) == (1, 1, 4)


def test_alternating_shapes_never_replay_a_stale_graph(fake: FakeTensorRT, plan: Path) -> None:
    # static policy: each profile's context keeps one graph for its current state. A A B B A C A A B A B:
    # both profiles back and forth, a shape change within profile 0, returns to earlier shapes. A graph
    # replayed after its context was set up for another shape would raise StaleGraph.
    sequence = [A, A, B, B, A, C, A, A, B, A, B]
    with TensorRTRunner(plan, cuda_graph=True, shapes="static") as runner:
        for seed, shape in enumerate(sequence):
            _check(runner, shape, seed)
    p0, p1 = fake.contexts  # one per profile, in the order first used
    # profile 0 sees A A | A C A A A: setup, capture+replay; B grew the shared input buffer, so A is
    # re-bound and set up again; (C) setup, (A) setup, capture+replay, replay
    assert (p0.stats.plain_enqueues, p0.stats.captures, p0.stats.replays) == (4, 2, 3)
    # profile 1 sees B B B B: its graph survives the runs of profile 0 in between (its own context)
    assert (p1.stats.plain_enqueues, p1.stats.captures, p1.stats.replays) == (1, 1, 3)
    assert (p0.profiles_set, p1.profiles_set) == ([], [1])  # selected once, when made; never switched


def test_growing_a_buffer_drops_the_graph(fake: FakeTensorRT, plan: Path) -> None:
    with TensorRTRunner(plan, cuda_graph=True, shapes="static") as runner:
        _check(runner, A, 0)
        _check(runner, A, 1)  # graph for A
        _check(runner, BIG, 2)  # same profile, bigger: buffers move
        _check(runner, A, 3)
        _check(runner, A, 4)  # a new graph for A at the new addresses
        stats = fake.context.stats
    assert stats.captures == 2 and stats.replays == 2


def test_without_cuda_graph_every_run_is_a_plain_enqueue(fake: FakeTensorRT, plan: Path) -> None:
    with TensorRTRunner(plan) as runner:
        for seed, shape in enumerate([A, A, B, A]):
            _check(runner, shape, seed)
    stats = [c.stats for c in fake.contexts]
    assert [(s.plain_enqueues, s.captures, s.replays) for s in stats] == [(3, 0, 0), (1, 0, 0)]
    # one context per profile: profile 1's selected once when it was made (a new context starts on 0)
    assert [c.profiles_set for c in fake.contexts] == [[], [1]]


def test_capture_failure_is_one_deploy_error(fake: FakeTensorRT, plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TensorRTRunner(plan, cuda_graph=True, shapes="static") as runner:
        _check(runner, A, 0)
        monkeypatch.setattr(fake.context, "_needs_setup", True)  # as if this engine's enqueue were not capturable
        with pytest.raises(DeployError, match="cannot capture a CUDA graph.*2x3x96x96.*without CUDA graphs") as err:
            runner.infer(_x(A, 1))
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_eight_threads_each_get_their_own_result(fake: FakeTensorRT, plan: Path, cuda_graph: bool) -> None:
    shapes = [A, B, C, A]
    errors: list[BaseException] = []
    checked = [0] * 8

    def worker(index: int) -> None:
        try:
            for i in range(12):
                shape = shapes[(index + i // 3) % len(shapes)]  # runs of three: graphs get captured too
                x = _x(shape, 1000 * index + i)
                out = runner.infer(x)["logits"]
                np.testing.assert_allclose(out, fake_logits(x), rtol=1e-6, atol=1e-6)
                checked[index] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with TensorRTRunner(plan, cuda_graph=cuda_graph, shapes="static") as runner:
        _in_threads(worker, 8)
    assert not errors, errors[0]
    assert checked == [12] * 8


def test_split_calls_from_threads_never_share_the_context(fake: FakeTensorRT, plan: Path) -> None:
    # load_input / run / fetch from several threads: each call holds the lock, so the context is never
    # used by two threads at once (the fake raises ConcurrentUse if it is). Which input a fetch sees is
    # not promised here (the buffers hold one query): only infer() makes a query atomic.
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for i in range(10):
                runner.run(runner.load_input(_x([A, B, C][(index + i) % 3], i)))
                runner.synchronize()
                assert runner.fetch()["logits"].shape[1] == CLASSES
        except BaseException as exc:  # noqa: BLE001 - ConcurrentUse above all; reported by the main thread
            errors.append(exc)

    with TensorRTRunner(plan, cuda_graph=True, shapes="static") as runner:
        _in_threads(worker, 8)
    assert not errors, errors[0]


# ----------------------------------------------------------------------------- refusals of the bindings


def test_refused_profile_switch_names_profile_and_shape(fake: FakeTensorRT, plan: Path) -> None:
    fake.refuse_profiles.add(1)  # set_optimization_profile_async raises RuntimeError, as the bindings do
    with TensorRTRunner(plan) as runner:
        _check(runner, A, 0)
        with pytest.raises(DeployError) as err:
            runner.infer(_x(B, 1))
        _check(runner, A, 2)  # still usable on the other profile
    msg = str(err.value)
    assert "optimization profile #1" in msg and "1x3x160x160:2x3x224x224:2x3x288x288" in msg
    assert "2x3x200x200" in msg and "Error in set optimization profile async." in msg
    assert err.value.__cause__ is None and "\n" not in msg


def test_refused_input_shape_is_a_deploy_error(fake: FakeTensorRT, plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TensorRTRunner(plan) as runner:
        monkeypatch.setattr(FakeContext, "set_input_shape", lambda self, name, shape: False)
        with pytest.raises(DeployError, match="refused input shape 2x3x96x96 for profile #0"):
            runner.infer(_x(A, 0))


def test_fetch_before_run_and_use_outside_with(fake: FakeTensorRT, plan: Path) -> None:
    runner = TensorRTRunner(plan)
    with pytest.raises(DeployError, match="not active"):
        runner.load_input(_x(A, 0))
    with runner:
        with pytest.raises(DeployError, match="fetch\\(\\) before run\\(\\)"):
            runner.fetch()


# ----------------------------------------------------------------------------- host code


def _host_code_allowed(fake: FakeTensorRT) -> bool:
    return fake.runtimes[-1].engine_host_code_allowed


def test_plain_plan_never_allows_host_code(fake: FakeTensorRT, plan: Path) -> None:
    with TensorRTRunner(plan):
        assert _host_code_allowed(fake) is False
    with TensorRTRunner(plan, check_compat=False):
        assert _host_code_allowed(fake) is False


def test_version_compatible_sidecar_allows_host_code(fake: FakeTensorRT, tmp_path: Path) -> None:
    path = write_fake_plan(tmp_path / "vc.engine", PROFILES, host_code=True)
    _sidecar(path, version_compatible=True, tensorrt_version="10.7.0")  # built with an older 10.x
    for check in (True, False):  # the sidecar is read in both modes
        with TensorRTRunner(path, check_compat=check) as runner:
            assert _host_code_allowed(fake) is True
            _check(runner, A, 0)


def test_version_compatible_plan_without_sidecar_needs_the_callers_word(fake: FakeTensorRT, tmp_path: Path) -> None:
    path = write_fake_plan(tmp_path / "trtexec_vc.engine", PROFILES, host_code=True)  # no .json
    with pytest.raises(DeployError, match="allow_host_code=True") as err:
        with TensorRTRunner(path, check_compat=False):
            pass
    assert _host_code_allowed(fake) is False and "host code" in str(err.value)
    with TensorRTRunner(path, check_compat=False, allow_host_code=True) as runner:
        assert _host_code_allowed(fake) is True
        _check(runner, B, 1)


def test_allow_host_code_false_overrides_the_sidecar(fake: FakeTensorRT, tmp_path: Path) -> None:
    path = write_fake_plan(tmp_path / "vc.engine", PROFILES, host_code=True)
    _sidecar(path, version_compatible=True)
    with pytest.raises(DeployError, match="cannot load"):
        with TensorRTRunner(path, allow_host_code=False):
            pass
    assert _host_code_allowed(fake) is False


def test_unloadable_plan_with_host_code_allowed_gives_no_host_code_hint(fake: FakeTensorRT, tmp_path: Path) -> None:
    path = tmp_path / "garbage.engine"
    path.write_bytes(b"not a plan")
    with pytest.raises(DeployError, match="not a plan file") as err:
        with TensorRTRunner(path, check_compat=False, allow_host_code=True):
            pass
    assert "allow_host_code" not in str(err.value)


def test_sidecar_of_another_engine_is_refused(fake: FakeTensorRT, tmp_path: Path) -> None:
    path = write_fake_plan(tmp_path / "m.engine", PROFILES[:1])
    _sidecar(path)  # lists two profiles
    with pytest.raises(DeployError, match="belongs to another engine"):
        with TensorRTRunner(path):
            pass


def test_contexts_are_made_in_one_place(fake: FakeTensorRT, plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the hook a profiler attaches through: _create_context sees (and may change) every context made
    made = []
    original = TensorRTRunner._create_context

    def spy(self: TensorRTRunner, engine: object, profile: int, shape: tuple[int, ...]) -> object:
        ctx = original(self, engine, profile, shape)  # type: ignore[arg-type]
        made.append(ctx)
        return ctx

    monkeypatch.setattr(TensorRTRunner, "_create_context", spy)
    with TensorRTRunner(plan, cuda_graph=True, shapes="dynamic") as runner:
        for seed, shape in enumerate([A, A, B, A, A, A]):  # per profile, and one for A's graph
            _check(runner, shape, seed)
    assert made == fake.contexts and len(made) == 3


def _in_threads(worker, n: int) -> None:
    """Run ``worker(i)`` for i < n in n threads at once and wait for them (a minute at most each)."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
