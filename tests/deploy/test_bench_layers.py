"""``benchmark --per-layer``: the aggregation, onnxruntime's profiler and OpenVINO's counters for real, TensorRT's
IProfiler with a fake."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from deploy.commands.bench import layer_times as layer_profile
from deploy.commands.bench.layer_times import aggregate, profile_onnxruntime
from deploy.errors import DeployError
from tests.deploy.test_trt_runner import GPU_REASON, gpu


def test_aggregate_sums_per_run_per_layer_and_op():
    events = [("a", "Conv", 2.0), ("b", "MatMul", 1.0), ("c", "Conv", 1.0)] * 4
    p = aggregate(events, 4, backend="x", shape=[1, 3, 64, 64])
    assert p.total_ms == pytest.approx(4.0) and p.runs == 4
    assert [(t.name, t.ms) for t in p.layers] == [("a", 2.0), ("b", 1.0), ("c", 1.0)]
    assert [(o.op, o.ms, o.nodes) for o in p.ops] == [("Conv", 3.0, 2), ("MatMul", 1.0, 1)]
    assert sum(o.pct for o in p.ops) == pytest.approx(100) and p.top(1)[0].name == "a"
    with pytest.raises(DeployError, match="no layer time"):
        aggregate([], 3, backend="x", shape=[1])


def test_onnxruntime_profile_of_a_real_graph(s_onnx, tmp_path):
    p = profile_onnxruntime(s_onnx(tmp_path / "s.onnx"), (1, 3, 64, 64), threads=1, runs=3)
    ops = {o.op: o for o in p.ops}
    assert p.runs == 3 and p.backend == "onnxruntime"
    assert ops["MatMul"].nodes == 32 and "Conv" in ops and ops["LayerNormalization"].nodes == 25
    assert p.total_ms > 0 and abs(sum(t.ms for t in p.layers) - p.total_ms) < 1e-6


def test_cli_per_layer(s_onnx, tmp_path):
    path = s_onnx(tmp_path / "s.onnx")
    res = CliRunner().invoke(cli.main, ["benchmark", "--onnx", str(path), "-r", "64", "--iterations", "2",
                                        "--per-layer", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["per_layer"]["shape"] == [1, 3, 64, 64] and data["per_layer"]["ops"]
    res = CliRunner().invoke(cli.main, ["benchmark", "-v", "s", "-r", "64", "--iterations", "2", "--per-layer"])
    assert res.exit_code == 2 and "--per-layer times layers on onnxruntime, tensorrt and openvino, not on torch" \
        in res.output


def test_aggregate_keeps_each_layers_exec_type():
    p = aggregate([("a", "Convolution", 1.0, "jit_avx2_I8"), ("r", "Reorder", 0.5, "ref_any_FP32")] * 2, 2,
                  backend="openvino", shape=[1])
    assert [(t.name, t.exec_type, t.ms) for t in p.layers] == [("a", "jit_avx2_I8", 1.0), ("r", "ref_any_FP32", 0.5)]
    assert aggregate([("a", "Conv", 1.0)], 1, backend="x", shape=[1]).layers[0].exec_type == ""


def test_openvino_per_layer_of_a_real_graph(s_onnx, tmp_path):
    pytest.importorskip("openvino")
    path = s_onnx(tmp_path / "s.onnx")
    res = CliRunner().invoke(cli.main, ["benchmark", "--onnx", str(path), "--backend", "openvino", "-r", "64",
                                        "--iterations", "2", "--per-layer", "--json"])
    assert res.exit_code == 0, res.output
    prof = json.loads(res.stdout)["per_layer"]
    assert prof["shape"] == [1, 3, 64, 64] and prof["backend"].startswith("openvino[CPU,")
    layers = prof["layers"]
    assert all(t["exec_type"] for t in layers)  # every executed node names its kernel
    assert abs(sum(t["ms"] for t in layers) - prof["total_ms"]) < 1e-6 and prof["total_ms"] > 0
    ops = {o["op"] for o in prof["ops"]}
    assert {"Convolution", "FullyConnected"} <= ops or {"Convolution", "MatMul"} <= ops, ops
    # the compiled graph's node names are the ONNX ones (fused), so a user can find the layer
    assert any(t["name"].startswith("stages.0.blocks.0.channel_mlp1.fc1") for t in layers)
    table = CliRunner().invoke(cli.main, ["benchmark", "--onnx", str(path), "--backend", "openvino", "-r", "64",
                                          "--iterations", "2", "--per-layer"]).stdout
    assert "exec type" in table and "slowest 15 layers" in table


def test_layer_op_from_tensorrt_layer_names():
    assert layer_profile.layer_op("stages.0.blocks.0.channel_mlp1.fc1/MatMul + stages.0.blocks.0/Add") == "MatMul"
    assert layer_profile.layer_op("head/Gemm_1") == "Gemm"
    assert layer_profile.layer_op("Reformatting CopyNode for Input Tensor 0") == "Reformatting"


def test_tensorrt_profiler_with_a_fake(monkeypatch):
    fake_trt = types.ModuleType("tensorrt")

    class IProfiler:
        def __init__(self) -> None:
            pass

    fake_trt.IProfiler = IProfiler
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)

    class Runner:
        cuda_graph = False

        def __init__(self) -> None:
            self.profiler = None
            self.calls = 0

        def attach_profiler(self, profiler):
            self.profiler = profiler

        def infer(self, x):
            self.calls += 1
            if self.profiler is not None:  # what TensorRT does after each enqueue
                self.profiler.report_layer_time("stem/Conv + stem/Relu", 0.5)
                self.profiler.report_layer_time("head/Gemm", 0.1)
            return {"logits": np.zeros((1, 10), np.float32)}

    runner = Runner()
    p = layer_profile.profile_tensorrt(runner, (1, 3, 64, 64), runs=5)
    assert runner.calls == 6 and runner.profiler is None  # warm-up unprofiled, detached after
    assert [(t.name, t.op, t.ms) for t in p.layers] == [("stem/Conv + stem/Relu", "Conv", 0.5), ("head/Gemm", "Gemm", 0.1)]
    assert p.total_ms == pytest.approx(0.6)
    runner.cuda_graph = True
    with pytest.raises(DeployError, match="drop --cuda-graph"):
        layer_profile.profile_tensorrt(runner, (1, 3, 64, 64))


@gpu
def test_tensorrt_per_layer_on_a_real_engine(s_onnx, tmp_path: Path) -> None:
    assert GPU_REASON is None
    from deploy.modelfile.profiles import ShapeProfile
    from deploy.runners.tensorrt import TensorRTRunner
    from deploy.trt.builder import build_engine

    engine = build_engine(s_onnx(tmp_path / "convmlp_s.onnx"),
                          [ShapeProfile((1, 3, 64, 64), (1, 3, 128, 128), (2, 3, 160, 160))]).engine_path
    with TensorRTRunner(engine) as runner:
        p = layer_profile.profile_tensorrt(runner, (1, 3, 128, 128), runs=5)
    assert p.runs == 5 and p.total_ms > 0 and len(p.layers) > 5
    assert any(o.op in ("MatMul", "Conv") for o in p.ops)
