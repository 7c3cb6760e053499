"""Every script in benchmarks/ runs at its smallest settings and writes the results it promises.

Each script runs as its own process (as a user runs it), ConvMLP-S at 64x64 where the script takes sizes,
one round, tiny durations and a couple of calibration images, into a temporary ``--out`` (never
benchmarks/results). The checks read what it wrote: the rows and keys a broken script would lose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
HAS_CUDA = torch.cuda.is_available()

S64 = ["--variants", "s", "--cases", "1x64"]
FAST = ["--duration-s", "0.05", "--rounds", "1", "--warmup-ms", "0"]


@dataclass
class Script:
    args: list[str]
    #: result stem in --out, and a check of (json data, markdown text)
    stem: str
    check: Callable[[dict[str, Any], str], None]
    cuda: bool = False
    slow: bool = False
    timeout_s: int = 420
    #: options that point at the shared folder of exported graphs
    onnx_dir: bool = False


def _interleaved(targets: int) -> Callable[[dict[str, Any], str], None]:
    """A report of one variant at one case, ``targets`` runners, ``targets - 1`` speed-ups."""

    def check(data: dict[str, Any], md: str) -> None:
        assert [r["resolution"] for r in data["results"]] == [[64, 64]] * targets
        assert {r["variant"] for r in data["results"]} == {"s"}
        assert all(r["latency_ms"]["median"] > 0 for r in data["results"])
        assert len(data["speedups"]) == targets - 1
        assert all(s["height"] == 64 and s["speedup_median"] > 0 for s in data["speedups"])
        assert data["machine"] and data["versions"]
        assert md.startswith("#") and "Machine:" in md and "64x64" in md

    return check


def _bench_cpu(data: dict[str, Any], md: str) -> None:
    _interleaved(2)(data, md)
    (row,) = data["comparison"]
    assert row["resolution"] == "64x64" and row["speedup"] > 0 and row["ceiling"] > 0
    assert set(data["settings"]["peak_tflops"]) == {"torch", "onnxruntime"}
    assert "(128^3" in md


def _exporters(data: dict[str, Any], md: str) -> None:
    _interleaved(3)(data, md)
    assert set(data["graphs"]["s"]) == {"torchscript", "dynamo"}
    assert all(g["nodes_shipped"] > 0 for g in data["graphs"]["s"].values())


def _openvino_ir(data: dict[str, Any], md: str) -> None:
    precisions = data["settings"]["precisions"]
    assert precisions[0] == "f32"
    _interleaved(2)({**data, "speedups": data["speedups"][:1], "results": data["results"][:2]}, md)
    assert len(data["results"]) == 2 * len(precisions) and len(data["speedups"]) == len(precisions)
    assert set(data["files"]["s"]["load"]) == {"onnx", "ir"}
    assert "Latency at 1x3x64x64" in md


def _accuracy_of(names: int) -> Callable[[dict[str, Any], str], None]:
    def check(data: dict[str, Any], md: str) -> None:
        assert len(data["accuracy"]["s"]) == names
        assert all(0 <= m["top1"] <= 1 and m["rel_l2"] >= 0 for m in data["accuracy"]["s"].values())
        assert "| rel L2 | min cosine |" in md

    return check


def _cpu_backends(data: dict[str, Any], md: str) -> None:
    from deploy.machine import cpu_features

    bf16 = cpu_features()["bf16"]  # OpenVINO BF16 only where the CPU has it natively
    _interleaved(6 if bf16 else 5)(data, md)
    _accuracy_of(5 if bf16 else 4)(data, md)
    assert ("ov bf16" in data["accuracy"]["s"]) == bf16
    assert set(data["settings"]["peaks_tflops"]) == {"fp32", "bf16"}
    assert bool(data["settings"]["peaks_tflops"]["bf16"]) == bf16


def _int8_cpu(data: dict[str, Any], md: str) -> None:
    _interleaved(5)(data, md)
    _accuracy_of(5)(data, md)


def _ov_layers(data: dict[str, Any], md: str) -> None:
    assert data["shape"] == [1, 3, 64, 64]
    assert {"s fp32 as f32", "s int8 tensorrt layout", "s int8 cpu layout"} <= set(data["results"])
    for r in data["results"].values():
        assert r["total_ms"] > 0 and r["nodes"] > 0 and r["kernels"]
    assert "batch 1 x 64x64" in md


def _ort_profile(data: dict[str, Any], md: str) -> None:
    assert data["shape"] == [1, 3, 64, 64]
    assert data["results"]["s"]["ops"] and data["results"]["s"]["kernel_ms_per_run"] > 0
    assert "| s | **all kernels** |" in md


def _cpp(data: dict[str, Any], md: str) -> None:
    (row,) = data["median_ms"]
    assert row["shape"] == [1, 3, 64, 64]
    assert all(row[k] > 0 for k in ("C++ convmlp_ov", "Python OpenVINORunner", "benchmark_app"))
    assert "| S 1x64 |" in md


def _serve(data: dict[str, Any], md: str) -> None:
    assert len(data["rows"]) == 2 * 2  # two servers x (the 64 stream, the mixed stream) x one level
    assert {r["shapes"] for r in data["rows"]} == {"64", "mixed"}
    assert all(r["clients"] == 1 and r["images_per_s"] > 0 for r in data["rows"])
    assert set(data["in_process_images_per_s"]) == {"64", "mixed"}
    assert "in-process OnnxRuntimeRunner" in md


def _weight_bits(data: dict[str, Any], md: str) -> None:
    assert [r["weight_bits"] for r in data["rows"]] == [8, 7]
    assert all(0 <= r["rel_l2_min"] <= r["rel_l2_max"] for r in data["rows"])
    assert "| S | 8-bit |" in md and "| S | 7-bit |" in md


def _wbq(data: dict[str, Any], md: str) -> None:
    (row,) = data["rows"]
    assert row["model"].startswith("seed 0")
    assert "export_exit" in row or {"default", "ORT_DISABLE_ALL"} <= set(row)


def _trained(data: dict[str, Any], md: str) -> None:
    assert data["training"]["epochs"] == 1 and data["training"]["train_images"] == 32
    assert data["rows"] and data["exports"] and data["speed"]
    assert any(r["row"].startswith("PyTorch FP32") for r in data["rows"] if "top1" in r)
    assert "| weights | model [row] |" in md


def _shape_stream(data: dict[str, Any], md: str) -> None:
    (run,) = data["variants"]["s"]["runs"]
    assert run["precision"] == "fp32"
    assert {"random", "cycle"} <= set(run) and "cache" in data["variants"]["s"]
    assert "Machine:" in md


def _bench_gpu(data: dict[str, Any], md: str) -> None:
    assert {r["precision"] for r in data["results"]} >= {"fp32", "fp16"}
    assert all(r["resolution"] == [64, 64] for r in data["results"])
    assert "Measured matmul peak (1024x1024)" in md


def _cuda_graphs(data: dict[str, Any], md: str) -> None:
    assert [(r["dtype"], r["resolution"]) for r in data["rows"]] == [("fp32", "64x64"), ("fp16", "64x64")]
    assert all(r["speedup"] > 0 for r in data["rows"])


def _harness(data: dict[str, Any], md: str) -> None:
    assert len(data["benchmark_app"]) == len(data["benchmark"]) == len(data["ratios"]) == data["settings"]["rounds"]
    assert all(r > 0 for r in data["ratios"]) and "request alone (input set once)" in data["in_process"]["ways"]
    assert "| median |" in md


def _finetuned(data: dict[str, Any], md: str) -> None:
    rows = data["rows"]
    assert rows and all(0 <= r["top1"] <= 1 for r in rows if r.get("top1") is not None)
    assert data["preprocessing"]["input_size"] == [3, 32, 32]
    assert {r["setup"] for r in rows} == {"recorded 32 px", "no preprocessing options (224 px, ImageNet)"}


def _tune_figures(data: dict[str, Any], md: str) -> None:
    (row,) = data["rows"]
    assert row["tune_exit"] == 0 and row["chosen"] and row["coverage"]["decided"] >= 1
    assert [i["config"] for i in row["interleaved"]][0] == "tune's choice" and len(row["interleaved"]) == 4
    assert row["interleaved"][0]["choice_speedup"] == 1.0
    # each configuration in 1 fresh process of its own (--rounds 1): 6 rounds x 1 pass x 1 size
    assert all(i["p50_ms"] == i["size_p50_ms"] > 0 and i["queries"] == 6 for i in row["interleaved"])
    assert all(i["process_size_p50_ms"] == [i["size_p50_ms"]] for i in row["interleaved"])
    again = row["remeasure"]  # benchmark --config: 3 fresh processes, the median's over tune's (3 too)
    assert row["recorded"]["timed_in"] == "3 fresh processes" and row["recorded"]["processes"] == 3
    assert len(again["processes"]) == 3 and again["ratio"] > 0 and again["after_tune_s"] > 0
    assert again["ratio"] in again["process_ratios"]
    assert f"| {row['cpu']} | S | 64 |" in md


def _trt_stream(data: dict[str, Any], md: str) -> None:
    assert {r["stream"] for r in data["rows"]} == {"random", "cycle"}


SCRIPTS: dict[str, Script] = {
    "bench_cpp_openvino.py": Script([*S64, "--rounds", "1", "--runs", "2"], "cpp_openvino", _cpp, slow=True),
    "bench_cpu.py": Script([*S64, *FAST, "--peak-n", "128"], "bench_cpu", _bench_cpu, onnx_dir=True),
    "bench_cpu_backends.py": Script([*S64, *FAST, "--peak-n", "128", "--calibration", "2", "--photos", "2"],
                                    "cpu_backends", _cpu_backends, slow=True),
    "bench_exporters.py": Script([*S64, *FAST], "exporters", _exporters, slow=True),
    "bench_gpu.py": Script([*S64, "--duration-s", "0.05", "--warmup-ms", "0", "--peak-n", "1024", "--budget-s", "0"],
                           "bench_gpu", _bench_gpu, cuda=True),
    "bench_int8_cpu.py": Script([*S64, *FAST, "--calibration", "2", "--held-out", "2"], "int8_cpu", _int8_cpu,
                                slow=True),
    "bench_openvino_ir.py": Script([*S64, *FAST, "--repeats", "1"], "openvino_ir", _openvino_ir, slow=True),
    "bench_serve.py": Script(["--cases", "1x64", "--levels", "1", "--duration-s", "3"], "serve", _serve,
                             slow=True),
    "finetuned_digits.py": Script(["--steps", "20"], "finetuned_digits", _finetuned, slow=True, timeout_s=600),
    "tune_figures.py": Script(["--variants", "s", "--workloads", "64", "--budget-s", "40", "--held-out", "8",
                               "--calibration", "8", "--rounds", "1", "--slice-queries", "1"], "tune_figures",
                              _tune_figures, slow=True, timeout_s=600),
    "openvino_harness.py": Script(["--duration-s", "1", "--rounds", "1", "--side", "64", "--in-process-n", "3"],
                                  "openvino_harness", _harness, slow=True),
    "gpu_cuda_graphs.py": Script([*S64, "--rounds", "1", "--iterations", "2"], "gpu_cuda_graphs", _cuda_graphs,
                                 cuda=True),
    "int8_weight_bits.py": Script(["--variants", "s", "--calibration", "2", "--held-out", "2"], "int8_weight_bits",
                                  _weight_bits, slow=True),
    "openvino_int8_layers.py": Script(["--variants", "s", "--size", "64", "--runs", "1", "--calibration", "2"],
                                      "openvino_int8_layers", _ov_layers, slow=True),
    "openvino_shape_stream.py": Script(["--variants", "s", "--precisions", "fp32", "--random", "2", "--rounds", "1",
                                        "--cache-requests", "2", "--check", "1"], "openvino_shape_stream",
                                       _shape_stream, slow=True),
    "ort_op_profile.py": Script(["--variants", "s", "--size", "64", "--runs", "1"], "ort_op_profile", _ort_profile,
                                onnx_dir=True),
    "ort_weight_bias_quantization.py": Script(["--seeds", "0", "--images", "2"], "ort_weight_bias_quantization",
                                              _wbq, slow=True),
    "trained_accuracy.py": Script(["--epochs", "1", "--train-images", "32", "--test-images", "8", "--image-size",
                                   "16", "--calibration", "2", "--duration-s", "0.05", "--rounds", "1"],
                                  "results", _trained, slow=True, timeout_s=900),
    "trt_shape_stream.py": Script(["--requests", "4", "--cycle", "2"], "trt_shape_stream", _trt_stream, cuda=True),
}

#: what a script without CUDA says, in one line, and its exit status
NO_CUDA = {"bench_gpu.py": (1, "needs a CUDA GPU"), "gpu_cuda_graphs.py": (1, "no CUDA device"),
           "trt_shape_stream.py": (0, "skipped: no TensorRT/CUDA")}


def _run(name: str, args: list[str], timeout_s: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(BENCH / name), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported graphs shared by the scripts that take ``--onnx-dir`` (the export is most of their time)."""
    return tmp_path_factory.mktemp("onnx")


def test_every_script_has_a_case() -> None:
    found = sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py")
    assert found == sorted(SCRIPTS), "add the new benchmarks/ script to SCRIPTS in this file"


def _params() -> list[Any]:
    out = []
    for name, s in SCRIPTS.items():
        marks = [pytest.mark.slow] if s.slow else []
        if s.cuda:
            marks.append(pytest.mark.skipif(not HAS_CUDA, reason=f"{name} needs CUDA (and TensorRT)"))
        out.append(pytest.param(name, marks=marks, id=name.removesuffix(".py")))
    return out


@pytest.mark.parametrize("name", _params())
def test_script_runs_at_smallest_settings(name: str, tmp_path: Path, onnx_dir: Path) -> None:
    s = SCRIPTS[name]
    out = tmp_path / "out"
    args = [*s.args, "--out", str(out)] + (["--onnx-dir", str(onnx_dir)] if s.onnx_dir else [])
    if name == "trt_shape_stream.py":
        engine = os.environ.get("CONVMLP_TEST_ENGINE")
        if not engine:
            pytest.skip("trt_shape_stream.py needs an engine: set CONVMLP_TEST_ENGINE to a plan built by "
                        "'convmlp-deploy build'")
        args += ["--engine", engine]
    res = _run(name, args, s.timeout_s)
    assert res.returncode == 0, f"{name} exited {res.returncode}:\n{res.stderr[-4000:]}"
    md = (out / f"{s.stem}.md").read_text()
    data = json.loads((out / f"{s.stem}.json").read_text())
    s.check(data, md)
    assert md.strip() in res.stdout  # the table is printed too


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is here: the scripts run for real")
@pytest.mark.parametrize("name", sorted(NO_CUDA))
def test_gpu_script_without_cuda_says_so(name: str, tmp_path: Path) -> None:
    code, words = NO_CUDA[name]
    res = _run(name, [*SCRIPTS[name].args, "--out", str(tmp_path)], 120)
    said = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == code
    assert len(said) == 1 and words in said[0], said
    assert not any(tmp_path.iterdir())


def test_results_default_and_bad_cases() -> None:
    """``--out`` defaults to benchmarks/results, and a malformed ``--cases`` is refused before any work."""
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    ap = common.parser("x")
    common.add_cases(ap, [])
    common.add_out(ap, "x.md")
    assert ap.parse_args([]).out == ROOT / "benchmarks" / "results"
    res = _run("bench_cpu.py", ["--cases", "1by64"], 60)
    assert res.returncode == 2 and "BATCHxSIDE" in res.stderr
