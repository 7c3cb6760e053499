"""The backend table: names, what each reads, option checks, install hints, the runners it opens."""

from __future__ import annotations

import numpy as np
import pytest

from deploy import backends
from deploy.backends import BACKENDS, RunnerOptions, backend, backend_names, default_backend
from deploy.errors import BackendUnavailable


def test_table():
    assert set(BACKENDS) == {"torch", "onnxruntime", "tensorrt", "openvino"}
    assert backend_names("onnx") == ["onnxruntime", "openvino"]
    assert backend_names("engine") == ["tensorrt"] and backend_names("variant") == ["torch"]
    assert [default_backend(r) for r in backends.READS] == ["torch", "onnxruntime", "tensorrt"]
    assert all(default_backend(b.reads) in backend_names(b.reads) for b in BACKENDS.values())
    with pytest.raises(ValueError, match="unknown backend 'tvm': choose one of torch, onnxruntime"):
        backend("tvm")
    # every backend that offers --per-layer says how it times layers, and no other does
    assert {n for n, b in BACKENDS.items() if b.profiler} == {n for n, b in BACKENDS.items() if "per_layer" in b.takes}
    assert len({b.profiler for b in BACKENDS.values() if b.profiler}) == 3


def test_option_checks():
    with pytest.raises(ValueError, match="openvino runs on cpu, not --device cuda"):
        backend("openvino").check_options(RunnerOptions(device="cuda"))
    with pytest.raises(ValueError, match="tensorrt runs on cuda, not --device cpu"):
        backend("tensorrt").check_options(RunnerOptions(device="cpu"))
    with pytest.raises(ValueError, match="onnxruntime runs the precision its onnx file was built with"):
        backend("onnxruntime").check_options(RunnerOptions(precision="bf16"))
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        backend("openvino").check_options(RunnerOptions(precision="int4"))
    with pytest.raises(ValueError, match="offers --precision auto, fp32, bf16, fp16, not int8"):
        backend("openvino").check_options(RunnerOptions(precision="int8"))
    assert RunnerOptions(precision="f32").precision == "fp32"  # one name for a precision, whatever was typed
    backend("openvino").check_options(RunnerOptions(precision="bf16"))


def test_missing_runtime_names_the_install(monkeypatch):
    real = backends.importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    assert not backend("openvino").installed()
    with pytest.raises(BackendUnavailable, match=r"openvino is not installed here: pip install "
                                                 r"'convmlp-deploy\[openvino\]'"):
        backend("openvino").open("x.onnx")


def test_open_gives_runners_that_agree(s_onnx, tmp_path):
    pytest.importorskip("openvino")
    from deploy.loader import reference_model

    path = s_onnx(tmp_path / "s.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 80)).astype(np.float32)
    outs = {}
    for name, source, opts in (
        ("torch", reference_model("s"), RunnerOptions()),
        ("onnxruntime", path, RunnerOptions(threads=1)),
        ("openvino", path, RunnerOptions(precision="f32", threads=1)),
    ):
        with backend(name).open(source, opts) as runner:
            outs[name] = runner.infer(x)["logits"]
    for name in ("onnxruntime", "openvino"):
        assert np.linalg.norm(outs[name] - outs["torch"]) / np.linalg.norm(outs["torch"]) < 1e-5
