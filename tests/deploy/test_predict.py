"""``predict``: real image files, PyTorch and onnxruntime agreeing, per-image failures, labels, JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from deploy.classes import top_k
from deploy.errors import OptionError
from deploy.modelfile.metadata import read_labels
from export.onnx import set_metadata


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory, s_onnx) -> Path:
    path = s_onnx(tmp_path_factory.mktemp("onnx") / "s.onnx")  # the same synthetic weights as --variant s
    proto = onnx.load(str(path))
    set_metadata(proto, {"variant": "s", "kind": "classifier", "num_classes": "1000",
                         "mean": "[0.485, 0.456, 0.406]", "std": "[0.229, 0.224, 0.225]",
                         "crop_pct": "0.875", "input_size": "[3, 224, 224]", "interpolation": "bicubic"})
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    smooth = np.stack([(xx * 255 // 400), (yy * 255 // 300), ((xx + yy) % 256)], axis=-1).astype(np.uint8)
    out = {
        "rgb.jpg": Image.fromarray(smooth),
        "grey.png": Image.fromarray(rng.integers(0, 256, (96, 64), dtype=np.uint8), mode="L"),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (120, 150, 4), dtype=np.uint8), mode="RGBA"),
        "palette.png": Image.fromarray(smooth[:200, :260]).convert("P", palette=Image.Palette.ADAPTIVE),
        "small.jpg": Image.fromarray(smooth[:40, :50]),
    }
    paths = {}
    for name, img in out.items():
        paths[name] = d / name
        img.save(paths[name])
    paths["corrupt.jpg"] = d / "corrupt.jpg"
    paths["corrupt.jpg"].write_bytes(paths["rgb.jpg"].read_bytes()[:500])
    paths["text.png"] = d / "text.png"
    paths["text.png"].write_text("hello")
    return paths


def _run(*args: object):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


def _good(images: dict[str, Path]) -> list[Path]:
    return [images[n] for n in ("rgb.jpg", "grey.png", "rgba.png", "palette.png", "small.jpg")]


# --------------------------------------------------------------------------- backends


def test_torch_and_onnxruntime_agree(images, onnx_path: Path) -> None:
    good = _good(images)
    a = _run(*good, "--variant", "s", "--top-k", "5", "--json")
    b = _run(*good, "--onnx", onnx_path, "--top-k", "5", "--json")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    ra, rb = json.loads(a.stdout)["results"], json.loads(b.stdout)["results"]
    assert [r["image"] for r in ra] == [str(p) for p in good] == [r["image"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x["ok"] and y["ok"] and x["input_shape"] == y["input_shape"] == [1, 3, 224, 224]
        assert [s["index"] for s in x["top_k"]] == [s["index"] for s in y["top_k"]]
        np.testing.assert_allclose(
            [s["probability"] for s in x["top_k"]], [s["probability"] for s in y["top_k"]], rtol=1e-3, atol=1e-5
        )
    # different images give different answers (the pipeline is not ignoring its input)
    assert len({tuple(s["index"] for s in r["top_k"]) for r in ra}) > 1


def test_json_schema(images, onnx_path: Path) -> None:
    res = _run(images["rgb.jpg"], "--onnx", onnx_path, "-k", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"model", "results"}
    assert out["model"]["backend"] == "onnxruntime" and out["model"]["num_classes"] == 1000
    assert out["model"]["variant"] == "s" and out["model"]["source"] == str(onnx_path)
    (r,) = out["results"]
    assert set(r) == {"image", "ok", "input_shape", "top_k", "error", "note"} and r["error"] is None
    assert r["note"] is None
    assert [s["rank"] for s in r["top_k"]] == [1, 2, 3]
    assert set(r["top_k"][0]) == {"rank", "index", "probability", "label"}
    probs = [s["probability"] for s in r["top_k"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1


def test_a_tiny_image_gets_a_note(images, onnx_path: Path, tmp_path: Path) -> None:
    """A 1x1 image is upscaled to 224 and answered, with a note saying so; a 400x300 one gets none."""
    tiny = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tiny)
    res = _run(tiny, images["rgb.jpg"], "--onnx", onnx_path, "--json")
    assert res.exit_code == 0, res.output
    tiny_r, small_r = json.loads(res.stdout)["results"]
    assert tiny_r["ok"] and "1x1, far below the model's 224x224 input" in tiny_r["note"]
    assert small_r["note"] is None
    res = _run(tiny, "--onnx", onnx_path)
    assert res.exit_code == 0 and "Note: the image is 1x1" in res.output


def test_native_resolution_and_hxw(images, onnx_path: Path) -> None:
    res = _run(images["rgb.jpg"], images["grey.png"], "--onnx", onnx_path, "-r", "native", "--json")
    assert res.exit_code == 0, res.output
    shapes = [r["input_shape"] for r in json.loads(res.stdout)["results"]]
    assert shapes == [[1, 3, 300, 400], [1, 3, 96, 64]]
    res = _run(images["rgb.jpg"], "--variant", "s", "-r", "96x128", "--json")
    assert json.loads(res.stdout)["results"][0]["input_shape"] == [1, 3, 96, 128]
    assert _run(images["rgb.jpg"], "--variant", "s", "-r", "16").exit_code == 2


def test_images_before_and_after_options(images, onnx_path: Path) -> None:
    res = _run(images["rgb.jpg"], "--onnx", onnx_path, "-k", "2", images["grey.png"], "--json")
    assert res.exit_code == 0, res.output
    assert [r["image"] for r in json.loads(res.stdout)["results"]] == [str(images["rgb.jpg"]), str(images["grey.png"])]


# --------------------------------------------------------------------------- failures


def test_bad_files_fail_alone(images, onnx_path: Path) -> None:
    order = [images["rgb.jpg"], images["corrupt.jpg"], images["grey.png"], images["text.png"],
             images["rgb.jpg"].parent / "missing.jpg", images["small.jpg"]]
    res = _run(*order, "--onnx", onnx_path, "--json")
    assert res.exit_code == 1
    results = json.loads(res.stdout)["results"]
    assert [r["ok"] for r in results] == [True, False, True, False, False, True]
    assert all(len(r["top_k"]) == 5 for r in results if r["ok"])
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(err_lines) == 4  # three bad images + the summary
    assert str(images["corrupt.jpg"]) in err_lines[0] and str(images["text.png"]) in err_lines[1]
    assert "missing.jpg: no such file" in err_lines[2]
    assert err_lines[3] == "Error: 3 of 6 images could not be classified"
    assert "Traceback" not in res.output


def test_table_output(images) -> None:
    res = _run(images["grey.png"], "--variant", "s", "-k", "2")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == f"{images['grey.png']}  [1x3x224x224]"
    assert lines[1].split() == ["rank", "class", "probability"]
    assert [ln.split()[0] for ln in lines[3:5]] == ["1", "2"]
    assert "synthetic weights" in res.stderr


def test_usage_errors(images, onnx_path: Path, tmp_path: Path) -> None:
    assert _run(images["rgb.jpg"]).exit_code == 2
    res = _run(images["rgb.jpg"], "--variant", "s", "--onnx", onnx_path)
    assert res.exit_code == 2 and "exactly one of" in res.output
    assert _run("--variant", "s").exit_code == 2  # no image
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"x")
    res = _run(images["rgb.jpg"], "--onnx", onnx_path, "--weights", ckpt)
    assert res.exit_code == 2 and "--weights" in res.output


def test_engine_without_tensorrt_is_one_line(images, make_engine) -> None:
    version = pytest.importorskip("deploy.trt.version")
    from deploy.errors import BackendUnavailable

    try:
        version.import_tensorrt()
    except BackendUnavailable:
        pass
    else:
        pytest.skip("TensorRT is installed here: the no-TensorRT message cannot be checked")
    plan = make_engine()
    res = _run(images["rgb.jpg"], "--engine", plan)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().startswith("Error:") and res.output.strip().count("\n") == 0
    assert "tensorrt" in res.output.lower()


# --------------------------------------------------------------------------- labels and scores


def test_labels(images, onnx_path: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class number {i}\n" for i in range(1000)) + "\n")
    res = _run(images["rgb.jpg"], "--onnx", onnx_path, "--labels", labels, "--json")
    assert res.exit_code == 0, res.output
    for s in json.loads(res.stdout)["results"][0]["top_k"]:
        assert s["label"] == f"class number {s['index']}"
    res = _run(images["rgb.jpg"], "--onnx", onnx_path, "--labels", labels, "-k", "1")
    assert res.stdout.splitlines()[1].split() == ["rank", "class", "label", "probability"]

    short = tmp_path / "short.txt"
    short.write_text("cat\ndog\n")
    res = _run(images["rgb.jpg"], "--onnx", onnx_path, "--labels", short)
    assert res.exit_code == 2
    assert "2 labels but the model has 1000 classes" in res.output
    assert "class number" not in res.output and "rank" not in res.output  # refused before any work


def test_read_labels_counts(tmp_path: Path) -> None:
    p = tmp_path / "l.txt"
    p.write_text("\ufeffa\r\nb\n\nc\n\n\n", encoding="utf-8")
    assert read_labels(p, 4) == ["a", "b", "", "c"]  # inner blank lines count, trailing ones do not
    with pytest.raises(OptionError, match="4 labels but the model has 3"):  # --labels that do not fit: exit 2
        read_labels(p, 3)


def test_top_k_matches_softmax_by_hand() -> None:
    logits = np.array([1.0, 3.0, -2.0, 3.0, 0.5], dtype=np.float32)
    z = sum(math.exp(v) for v in logits.tolist())
    top = top_k(logits, 3, labels=["a", "b", "c", "d", "e"])
    assert [s.index for s in top] == [1, 3, 0]  # tie between 1 and 3: lower index first
    assert [s.label for s in top] == ["b", "d", "a"]
    for s in top:
        assert s.probability == pytest.approx(math.exp(float(logits[s.index])) / z, rel=1e-12)
    assert len(top_k(logits, 50)) == 5
    big = np.array([1000.0, 999.0], dtype=np.float32)  # no overflow
    assert top_k(big, 1)[0].probability == pytest.approx(1 / (1 + math.exp(-1)))
