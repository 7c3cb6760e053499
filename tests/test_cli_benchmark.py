"""``convmlp-deploy benchmark``: JSON schema of a real tiny run, files, and the refusals
(exit code, one message, no work started)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
import deploy.commands.bench


def invoke(*args: str):
    return CliRunner().invoke(cli.main, ["benchmark", *args])


def test_torch_json_to_stdout_is_quiet_and_complete() -> None:
    res = invoke("-v", "s", "-r", "64", "-b", "2", "--iterations", "3", "--warmup-ms", "0", "--threads", "1",
                 "--percentiles", "50,99.9", "--peak-tflops", "2", "--json", "-")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # nothing but JSON on stdout
    assert set(data) == {"machine", "versions", "settings", "results"}
    assert data["machine"]["cpu"] and data["machine"]["cores"] >= 1
    assert {"python", "torch", "onnxruntime"} <= set(data["versions"])
    (r,) = data["results"]
    assert r["backend"] == "torch" and r["variant"] == "s" and r["precision"] == "fp32"
    assert r["batch"] == 2 and r["resolution"] == [64, 64] and r["queries"] == 3
    assert r["images_per_s"] == pytest.approx(2 * r["queries_per_s"])
    assert r["tflops"] == pytest.approx(2 * r["gmacs_per_image"] * 1e9 * r["images_per_s"] / 1e12)
    assert r["peak_fraction"] == pytest.approx(r["tflops"] / 2)
    assert set(r["latency_ms"]["percentiles"]) == {"p50", "p99.9"}
    for key in ("min", "max", "mean", "median", "cv"):
        assert key in r["latency_ms"]
    assert r["compute_ms"] is None and isinstance(r["warnings"], list)


def test_sweep_table_and_files(tmp_path: Path) -> None:
    js, cs = tmp_path / "out.json", tmp_path / "out.csv"
    res = invoke("-v", "s", "-r", "64", "32x64", "-b", "1", "2", "--iterations", "2", "--warmup-ms", "0",
                 "--threads", "1", "--json", str(js), "--csv", str(cs))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("runner"))
    assert "images/s" in lines[header] and "TFLOP/s" in lines[header]
    assert len([line for line in lines[header + 2:] if line.startswith("torch[")]) == 4
    data = json.loads(js.read_text())
    assert [(r["batch"], r["resolution"]) for r in data["results"]] == [
        (1, [64, 64]), (2, [64, 64]), (1, [32, 64]), (2, [32, 64])]
    rows = list(csv.DictReader(cs.open()))
    assert [r["resolution"] for r in rows] == ["64x64", "64x64", "32x64", "32x64"]


@pytest.fixture
def engine(make_engine) -> Path:
    return make_engine(profile=((1, 3, 128, 128), (4, 3, 224, 224), (8, 3, 256, 256)))


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-v", "s", "-r", "16"], 2, ">= 32"),
        (["-v", "s", "--duration-s", "0"], 2, "--duration-s"),
        (["-v", "s", "--iterations", "0"], 2, "--iterations"),
        (["-v", "s", "--duration-s", "1", "--iterations", "3"], 2, "not both"),
        (["-v", "s", "--precision", "fp16"], 2, "needs --device cuda"),
        (["-v", "s", "--backend", "onnxruntime"], 2, "needs --onnx"),
        (["--backend", "torch"], 2, "needs --variant"),
        ([], 2, "nothing to benchmark"),
        (["-v", "s", "--percentiles", "90,abc"], 2, "not a number"),
        (["-v", "s", "--cuda-graph"], 2, "--cuda-graph applies"),
        (["-v", "s", "--streams", "2"], 2, "--streams"),
        (["-v", "s", "--batch", "0"], 2, "--batch"),
    ],
)
def test_usage_errors_exit_2_before_work(no_work: list[str], args: list[str], code: int, message: str) -> None:
    res = invoke(*args)
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output
    assert no_work == []


def test_cuda_without_cuda_is_exit_1(no_work: list[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = invoke("-v", "s", "--device", "cuda")
    assert res.exit_code == 1 and "no CUDA device" in res.output
    assert len(res.output.strip().splitlines()) == 1 and no_work == []


def test_engine_shapes_outside_profiles_exit_2_listing_them(no_work: list[str], engine: Path, monkeypatch) -> None:
    import deploy.commands.bench

    monkeypatch.setattr(deploy.commands.bench, "check_environment", lambda target: None)  # as if TensorRT and CUDA were here
    res = invoke("--engine", str(engine), "-b", "16")
    assert res.exit_code == 2 and "largest batch 8" in res.output
    assert "#0 1x3x128x128:4x3x224x224:8x3x256x256" in res.output
    res = invoke("--engine", str(engine), "-r", "224", "512")
    assert res.exit_code == 2 and "512x512 is outside every profile" in res.output
    res = invoke("--engine", str(engine), "--onnx", str(engine))
    assert res.exit_code == 2 and "not both" in res.output
    assert no_work == []


def test_tensorrt_missing_is_one_line_exit_1(no_work: list[str], engine: Path) -> None:
    from deploy.errors import BackendUnavailable
    from deploy.trt.version import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailable:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    res = invoke("--engine", str(engine), "--backend", "tensorrt", "-r", "224")
    assert res.exit_code == 1 and "TensorRT is not installed" in res.output
    assert len(res.output.strip().splitlines()) == 1 and no_work == []


def test_plot_without_matplotlib_is_exit_1(no_work: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy.commands.bench, "plot_available", lambda: False)
    res = invoke("-v", "s", "--plot", "out.png")
    assert res.exit_code == 1 and "matplotlib" in res.output and no_work == []
