"""The OpenVINO runner on real OpenVINO (CPU): numerics, precision, shape cache, model cache, threads, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deploy.errors import BackendUnavailable, DeployError
from deploy.loader import reference_model

ov_runner = pytest.importorskip("deploy.runners.openvino")
pytest.importorskip("openvino")
OpenVINORunner = ov_runner.OpenVINORunner


@pytest.fixture(scope="module")
def graph(tmp_path_factory, s_onnx) -> Path:
    return s_onnx(tmp_path_factory.mktemp("ov") / "convmlp_s.onnx")


def _torch(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference_model("s")(torch.from_numpy(x)).numpy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_fp32_matches_pytorch_at_dynamic_shapes(graph, tmp_path):
    with OpenVINORunner(graph, precision="f32", threads=2, cache_dir=tmp_path) as r:
        assert r.precision_used == "fp32" and r.name == "openvino[CPU,fp32]"
        for shape in [(2, 3, 97, 131), (1, 3, 64, 96)]:
            x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
            out = r.infer(x)["logits"]
            assert out.shape == (shape[0], 1000)
            assert _rel(out, _torch(x)) < 1e-5


def test_auto_reports_what_openvino_chose(graph, tmp_path):
    caps = ov_runner.cpu_capabilities()
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    with OpenVINORunner(graph, precision="auto", cache_dir=tmp_path) as r:
        out = r.infer(x)["logits"]
        expected = "bf16" if "BF16" in caps else "fp32"
        assert r.precision_used == expected
    err = _rel(out, _torch(x))
    if expected == "bf16":
        assert 1e-4 < err < 5e-2  # really reduced precision, still the same function
    else:
        assert err < 1e-5


def test_one_compiled_model_per_shape_bounded(graph, tmp_path):
    """The static shape policy (the dynamic one, the default, is in test_openvino_shapes.py)."""
    shapes = [(1, 3, 64, 64), (1, 3, 64, 96), (1, 3, 64, 64)]
    with OpenVINORunner(graph, precision="f32", cache_dir="", max_compiled=1, shapes="static") as r:
        base = r.compiles  # the dynamic model compiled at activation (to fail early and read precision)
        for s in shapes:
            r.infer(np.zeros(s, np.float32))
        assert r.compiles - base == 3  # the third shape was evicted by the second (max_compiled=1)
    with OpenVINORunner(graph, precision="f32", cache_dir="", max_compiled=4, shapes="static") as r:
        base = r.compiles
        for s in shapes:
            r.infer(np.zeros(s, np.float32))
        assert r.compiles - base == 2
    with OpenVINORunner(graph, precision="f32", cache_dir="", max_compiled=0, shapes="static") as r:
        base = r.compiles
        for s in shapes:
            r.infer(np.zeros(s, np.float32))
        assert r.compiles - base == 0  # one dynamic-shape model serves every shape


def test_model_cache_dir_is_used(graph, tmp_path):
    cache = tmp_path / "ovcache"
    with OpenVINORunner(graph, precision="f32", cache_dir=cache, shapes="static") as r:
        r.infer(np.zeros((1, 3, 64, 64), np.float32))
    blobs = list(cache.rglob("*.blob"))
    assert len(blobs) >= 2  # the dynamic model and the 1x3x64x64 one


def test_threads_share_one_runner(graph):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(8)]
    with OpenVINORunner(graph, precision="f32", streams=2, cache_dir="") as r:
        expected = [r.infer(x)["logits"] for x in xs]
        got: dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            for _ in range(3):
                got[i] = r.infer(xs[i])["logits"]
                assert np.array_equal(got[i], expected[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(np.array_equal(got[i], expected[i]) for i in range(8))


def test_explicit_precision_the_cpu_lacks_is_refused(graph, monkeypatch):
    monkeypatch.setattr(ov_runner, "cpu_capabilities", lambda: ["FP32", "INT8"])
    with pytest.raises(ValueError, match="no native BF16"):
        OpenVINORunner(graph, precision="bf16").check_precision()
    with pytest.raises(ValueError, match="no native FP16"):
        OpenVINORunner(graph, precision="fp16").check_precision()
    OpenVINORunner(graph, precision="auto").check_precision()  # auto may fall back: it is reported


def test_silent_fallback_is_an_error(graph, monkeypatch):
    monkeypatch.setattr(ov_runner, "cpu_capabilities", lambda: ["FP32", "BF16"])
    monkeypatch.setattr(ov_runner, "_element_name", lambda value: "fp32")
    with pytest.raises(DeployError, match="compiled convmlp_s.onnx in fp32, not the bf16 asked for"):
        with OpenVINORunner(graph, precision="bf16", cache_dir=""):
            pass


def test_bad_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DeployError, match="not an ONNX model"):
        with OpenVINORunner(junk, cache_dir=""):
            pass
    # a valid ONNX file with an op OpenVINO does not know
    node = onnx.helper.make_node("Frobnicate", ["input"], ["logits"], domain="com.example")
    g = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    odd = tmp_path / "odd.onnx"
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                      onnx.helper.make_opsetid("com.example", 1)]), str(odd))
    with pytest.raises(DeployError, match=r"odd.onnx: OpenVINO cannot read it \(.*Frobnicate") as info:
        with OpenVINORunner(odd, cache_dir=""):
            pass
    assert "\n" not in str(info.value)
    with pytest.raises(DeployError, match="ONNX file not found"):
        with OpenVINORunner(tmp_path / "missing.onnx", cache_dir=""):
            pass


def test_missing_openvino_names_the_extra(graph, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("no openvino")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(BackendUnavailable, match=r"pip install 'convmlp-deploy\[openvino\]'"):
        with OpenVINORunner(graph):
            pass


def test_bad_options():
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        OpenVINORunner("x.onnx", precision="int4")
    with pytest.raises(ValueError, match="OpenVINO runs --precision auto, fp32, bf16, fp16, not int8"):
        OpenVINORunner("x.onnx", precision="int8")
    assert OpenVINORunner("x.onnx", precision="f32").name == "openvino[CPU,fp32]"
    with pytest.raises(ValueError, match="threads must be >= 1"):
        OpenVINORunner("x.onnx", threads=0)


def test_model_cache_is_kept_per_precision(graph, tmp_path):
    """OpenVINO's cache key ignores INFERENCE_PRECISION_HINT: one precision's compiled model must never be
    loaded for another (an FP16 blob was once served to a later f32 run under an fp32 label)."""
    cache = tmp_path / "ovcache"
    dirs = {p: OpenVINORunner(graph, precision=p, cache_dir=cache).model_cache_dir for p in ("auto", "fp32", "bf16", "fp16")}
    assert len(set(dirs.values())) == 4 and all(d.parent == cache for d in dirs.values())
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    caps = ov_runner.cpu_capabilities()
    runs = [p for p in ("fp16", "bf16") if {"fp16": "FP16", "bf16": "BF16"}[p] in caps][:1] + ["fp32"]
    first = {}
    for p in runs + runs[::-1]:  # both orders, one shared cache folder
        with OpenVINORunner(graph, precision=p, cache_dir=cache) as r:
            assert r.precision_used == p
            y = r.infer(x)["logits"]
        first.setdefault(p, y)
        assert np.array_equal(y, first[p])
    with OpenVINORunner(graph, precision="fp32", cache_dir="") as r:
        assert np.array_equal(r.infer(x)["logits"], first["fp32"])  # what the cache served is an fp32 compile
    assert any(dirs["fp32"].rglob("*.blob"))
