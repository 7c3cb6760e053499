"""The shape policy on real OpenVINO (CPU, ConvMLP-S): one dynamic model answers every size, recurring
sizes are specialised off the request path (no request waits on a compile), bounds in memory and on
disk, a full disk and corrupt cache entries; onnxruntime reports its policy; the CLI options."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import deploy
from deploy.loader import reference_model
from deploy.shapes import ShapePolicy, parse_bytes

ov_runner = pytest.importorskip("deploy.runners.openvino")
pytest.importorskip("openvino")
OpenVINORunner = ov_runner.OpenVINORunner
CacheWarning = ov_runner.CacheWarning
from deploy.runners.openvino_cache import is_blob  # noqa: E402

NO_CACHE = {"cache_dir": ""}


@pytest.fixture(scope="module")
def graph(tmp_path_factory, s_onnx) -> Path:
    return s_onnx(tmp_path_factory.mktemp("ov-shapes") / "convmlp_s.onnx")


@pytest.fixture(scope="module")
def torch_s():
    return reference_model("s")


def _x(h: int, w: int | None = None, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(h * 1000 + (w or h)).standard_normal((batch, 3, h, w or h)).astype(np.float32)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _wait(cond, timeout: float = 120.0) -> bool:
    """Poll ``cond`` until true (a background compile is under way) or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_dynamic_answers_every_new_size_with_one_compiled_model(graph, torch_s):
    with OpenVINORunner(graph, precision="fp32", threads=2, **NO_CACHE) as r:
        assert r.shapes == ShapePolicy() and r.compiles == 1  # the dynamic model, compiled in activate()
        for h, w in [(64, 64), (97, 131), (160, 96)]:
            x = _x(h, w)
            with torch.no_grad():
                ref = torch_s(torch.from_numpy(x)).numpy()
            assert _rel(r.infer(x)["logits"], ref) < 1e-5
        stats = r.shape_stats()
    assert r.compiles == 1  # nothing was compiled for a size: each was seen once (< specialize_after)
    assert stats["policy"] == "dynamic" and stats["first_sights"] == 3 and stats["specializations"] == 0
    assert stats["pending"] == 0 and stats["cache_bytes"] == 0 and stats["cache_dir"] is None


def test_a_recurring_size_is_specialised_in_the_background(graph):
    policy = ShapePolicy(specialize_after=2, max_specialized=4)
    x = _x(96)
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy, **NO_CACHE) as r:
        first = r.infer(x)["logits"]
        assert r.shape_stats()["specializations"] == 0
        r.infer(x)  # the second sighting queues a static compile; this request ran on the dynamic model
        assert _wait(lambda: r.shape_stats()["specializations"] == 1)
        special = r._compiled[(1, 3, 96, 96)]
        assert r._compiled_for((1, 3, 96, 96)) is special and special is not r._dynamic
        again = r.infer(x)["logits"]
        stats = r.shape_stats()
    assert _rel(again, first) < 1e-5  # the static compile computes what the dynamic one does
    assert stats["specialized"] == ["96x96"] and stats["made"] == 1 and stats["first_sights"] == 1
    assert stats["compiles"] == 2


def _gated_compiles(monkeypatch):
    """Static-shape compiles wait on the returned event (a compile made as slow as the test wants)."""
    gate = threading.Event()
    entered: list[bool] = []
    real = OpenVINORunner._compile_model

    def slow(self, model, config):
        if not model.is_dynamic():
            entered.append(True)
            assert gate.wait(120), "the test never opened the gate"
        return real(self, model, config)

    monkeypatch.setattr(OpenVINORunner, "_compile_model", slow)
    return gate, entered


def test_no_request_waits_on_a_compile(graph, monkeypatch):
    """4 threads on 4 new sizes, every size earning a compile at once, every compile held back: each request
    is answered (by the dynamic model) while the compiles still wait."""
    gate, entered = _gated_compiles(monkeypatch)
    sizes = [64, 80, 96, 112]
    policy = ShapePolicy(specialize_after=1, max_specialized=4)
    r = OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy, **NO_CACHE)
    with r:
        try:
            done: list[int] = []

            def client(s: int) -> None:
                for _ in range(2):
                    r.infer(_x(s))
                done.append(s)

            threads = [threading.Thread(target=client, args=(s,)) for s in sizes]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert sorted(done) == sizes, "a request waited on a held-back compile"
            assert not gate.is_set() and entered  # the worker is inside a compile the requests did not wait for
            stats = r.shape_stats()
            assert stats["specializations"] == 0 and stats["pending"] == 4
        finally:
            gate.set()
        assert _wait(lambda: r.shape_stats()["specializations"] == 4)
        assert r.shape_stats()["pending"] == 0
        for s in sizes:
            assert r._compiled_for((1, 3, s, s)) is not r._dynamic


def test_static_policy_compiles_on_the_request_path(graph, monkeypatch):
    gate, _ = _gated_compiles(monkeypatch)
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes="static", **NO_CACHE) as r:
        t = threading.Thread(target=r.infer, args=(_x(72),))
        t.start()
        t.join(timeout=1.0)
        try:
            assert t.is_alive()  # held by its own size's compile, as the static policy says
        finally:
            gate.set()
            t.join(timeout=120)
        assert not t.is_alive() and r.shape_stats()["specialized"] == ["72x72"]
        assert r.shape_stats()["policy"] == "static"


def test_warmup_sizes_are_ready_when_activate_returns(graph):
    policy = ShapePolicy(warmup=((1, 64, 64), (2, 64, 96)))
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy, **NO_CACHE) as r:
        stats = r.shape_stats()
        assert stats["specialized"] == ["64x64", "2x64x96"] and stats["pending"] == 0
        compiles = r.compiles
        r.infer(_x(64, 96, batch=2))
        assert r._compiled_for((2, 3, 64, 96)) is r._compiled[(2, 3, 64, 96)]
        assert r.compiles == compiles and r.shape_stats()["first_sights"] == 0  # declared, so not a first sight


def test_specialisations_are_bounded_in_memory(graph):
    policy = ShapePolicy(specialize_after=1, max_specialized=1)
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy, **NO_CACHE) as r:
        r.infer(_x(64))
        assert _wait(lambda: r.shape_stats()["made"] == 1)
        r.infer(_x(80))
        assert _wait(lambda: r.shape_stats()["made"] == 2)
        stats = r.shape_stats()
    assert stats["specialized"] == ["80x80"] and stats["evicted"] == 1 and len(r._requests) <= 2


def test_disk_cache_is_bounded_in_bytes_and_only_its_own_files_go(graph, tmp_path):
    root = tmp_path / "cache"
    (root / "notes").mkdir(parents=True)
    foreign = [root / "keep.bin", root / "notes" / "keep.blob"]
    for f in foreign:
        f.write_bytes(b"x" * 1_000_000)
    bound = parse_bytes("40M")  # about one blob of S
    policy = ShapePolicy.static(cache_bytes=bound, cache_dir=root)
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy) as r:
        assert r.model_cache_dir == root / "precision-fp32"
        for s in (64, 80, 96):
            r.infer(_x(s))
            assert 0 < r.cache_size() <= bound
        assert r.shape_stats()["cache_bytes"] == r.cache_size() and r.shape_stats()["cache_limit"] == bound
    assert all(f.stat().st_size == 1_000_000 for f in foreign)  # nothing outside precision-* is touched
    off = OpenVINORunner(graph, shapes=ShapePolicy(cache_bytes=0, cache_dir=root / "off"))
    assert off.model_cache_dir is None
    with off:
        pass
    assert not (root / "off").exists()


def _blobs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.blob"))


def test_a_full_disk_still_answers_with_one_warning(graph, tmp_path, monkeypatch):
    real = OpenVINORunner._compile_model

    def full(self, model, config):
        if "CACHE_DIR" in config:
            raise RuntimeError("Exception from src/inference/src/cache_manager.hpp:\nwrite failed: No space left on "
                               "device")
        return real(self, model, config)

    monkeypatch.setattr(OpenVINORunner, "_compile_model", full)
    x = _x(64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with OpenVINORunner(graph, precision="fp32", threads=2, shapes=ShapePolicy.static(cache_dir=tmp_path)) as r:
            assert r.infer(x)["logits"].shape == (1, 1000)
            r.infer(_x(80))
            stats = r.shape_stats()
    said = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(said) == 1 and "No space left on device" in str(said[0].message)
    assert "\n" not in str(said[0].message) and stats["cache_dir"] is None and len(stats["cache_warnings"]) == 1


def test_a_disk_too_full_to_write_is_named_once(graph, tmp_path, monkeypatch):
    policy = ShapePolicy.static(cache_dir=tmp_path)
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy) as r:
        r.infer(_x(64))  # fills the cache: the later run adds nothing to it
    monkeypatch.setattr(ov_runner.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy) as r:
            r.infer(_x(64))
    said = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(said) == 1 and "disk is full" in str(said[0].message)


def test_corrupt_cache_entries_are_replaced_and_named_once(graph, tmp_path):
    policy = ShapePolicy.static(cache_dir=tmp_path)
    x = _x(64)
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy) as r:
        good = r.infer(x)["logits"]
        folder = r.model_cache_dir
    blobs = _blobs(folder)
    assert len(blobs) == 2  # the dynamic model and 1x3x64x64
    for b in blobs:
        b.write_bytes(b"garbage" * 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy) as r:
            assert np.array_equal(r.infer(x)["logits"], good)
            stats = r.shape_stats()
    said = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert said and all(sum(b.name in m for m in said) == 1 for b in blobs)  # each named, once
    assert stats["cache_dir"] == str(tmp_path)  # the cache stays on, repaired
    assert all(b.read_bytes().startswith(b'<?xml version="1.0"?><compiled_blob') for b in _blobs(folder))


def test_a_runtime_that_raises_on_a_corrupt_entry_gets_it_deleted(graph, tmp_path, monkeypatch):
    """OpenVINO 2026.4 replaces an unusable entry itself; a version that raises instead gets it removed."""
    real = OpenVINORunner._compile_model

    def strict(self, model, config):
        folder = Path(config.get("CACHE_DIR", "")) if config.get("CACHE_DIR") else None
        if folder is not None and any(not is_blob(b) for b in folder.glob("*.blob")):
            raise RuntimeError("Exception from src/inference/src/dev/core_impl.cpp:\nCannot import the blob")
        return real(self, model, config)

    policy = ShapePolicy(cache_dir=tmp_path)
    with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy) as r:
        folder = r.model_cache_dir
    (bad,) = _blobs(folder)
    bad.write_bytes(b"\x00" * 100)
    monkeypatch.setattr(OpenVINORunner, "_compile_model", strict)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with OpenVINORunner(graph, precision="fp32", threads=2, shapes=policy) as r:
            r.infer(_x(64))
    said = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(said) == 1 and bad.name in said[0] and is_blob(bad)


def test_deploy_load_takes_and_reports_the_policy(graph, tmp_path):
    with deploy.load(graph, backend="openvino", precision="fp32", shapes=ShapePolicy(cache_dir=tmp_path)) as m:
        info = m.info()["shapes"]
        assert info["policy"] == "dynamic" and info["cache_dir"] == str(tmp_path)
        m(_x(64))
        assert m.info()["shapes"]["first_sights"] == 1
    with deploy.load(graph, backend="openvino", precision="fp32", shapes="static") as m:
        assert m.info()["shapes"]["policy"] == "static"
    with pytest.raises(ValueError, match="choose dynamic or static"):
        deploy.load(graph, backend="openvino", shapes="eager")


def test_onnxruntime_is_dynamic_whatever_is_asked(graph):
    pytest.importorskip("onnxruntime")
    with deploy.load(graph, shapes="static") as m:  # onnxruntime: one session answers every size
        assert m.backend == "onnxruntime"
        for s in (64, 80, 64):
            m(_x(s))
        stats = m.info()["shapes"]
    assert stats["policy"] == "dynamic" and stats["specializations"] == 0 and stats["first_sights"] == 2
    assert stats["cache_bytes"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--warmup", "12x"], "--warmup '12x'"),
    (["--warmup", "224,16"], "height and width must be >= 32"),
    (["--cache-size", "2Q"], "'2Q' is not a size"),
    (["--shape-policy", "static", "--specialize-after", "2"], "--specialize-after goes with --shape-policy dynamic"),
])
def test_cli_refuses_bad_shape_options_before_any_work(graph, tmp_path, args, message):
    from cli import main

    for command in (["predict", str(tmp_path / "no-such.jpg")], ["evaluate", "--data", str(tmp_path)],
                    ["benchmark", "--shape-policy", "dynamic"]):
        res = CliRunner().invoke(main, [*command, "--onnx", str(graph), "--backend", "openvino", *args])
        assert res.exit_code == 2, (command, res.output)
        assert message in res.output and "Traceback" not in res.output
