"""``evaluate``: accuracy on labelled real photographs, several backends side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from convmlp.preprocess import load_image, preprocess
from deploy.commands.evaluate import DatasetError, load_dataset
from deploy.loader import reference_model
from tests.photos import HELD_OUT_PHOTOS, make_photo_set


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return make_photo_set(tmp_path_factory.mktemp("eval") / "all", 12, sources=HELD_OUT_PHOTOS, size=(128, 128))


@pytest.fixture(scope="module")
def own_top1(photos) -> list[int]:
    """ConvMLP-S's (synthetic weights) top-1 for each photo, computed here independently of evaluate."""
    x = np.concatenate([preprocess(load_image(p), "s") for p in photos])
    with torch.no_grad():
        return reference_model("s")(torch.from_numpy(x)).argmax(1).tolist()


@pytest.fixture(scope="module")
def graphs(s_graph_pair) -> dict[str, Path]:
    return s_graph_pair


def _run(*args: str):
    return CliRunner().invoke(cli.main, ["evaluate", *map(str, args)])


def test_half_right_is_exactly_fifty_percent(photos, own_top1, tmp_path):
    root = photos[0].parent
    lines = [f"{p.name} {t if i % 2 == 0 else (t + 1) % 1000}" for i, (p, t) in enumerate(zip(photos, own_top1,
                                                                                           strict=True))]
    listing = tmp_path / "val.txt"
    listing.write_text("\n".join(lines) + "\n")
    res = _run("--data", root, "--labels-file", listing, "-v", "s", "--batch", "5", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    (row,) = data["results"]
    assert data["images"] == 12 and data["skipped"] == 0 and data["form"] == "list"
    assert row["top1"] == 0.5 and row["top5"] >= 0.5 and row["agreement"] == 1.0 and row["top1_vs_reference"] == 0


def test_backends_side_by_side_agree_with_pytorch(photos, own_top1, graphs, tmp_path):
    root = photos[0].parent
    (tmp_path / "val.txt").write_text("".join(f"{p.name} {t}\n" for p, t in zip(photos, own_top1, strict=True)))
    res = _run("--data", root, "--labels-file", tmp_path / "val.txt", "-v", "s", "--onnx", graphs["fp32"],
               graphs["fp16"], "--batch", "4", "--json-out", tmp_path / "out.json")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out.json").read_text())
    by = {(Path(r["source"]).name, r["backend"]): r for r in data["results"]}
    torch_row = next(r for r in data["results"] if r["backend"] == "torch")
    assert torch_row["top1"] == 1.0 and data["reference"] == torch_row["name"]
    fp32 = by[("convmlp_s.onnx", "onnxruntime")]
    assert fp32["agreement"] == 1.0 and fp32["top1"] == 1.0 and fp32["precision"] == "fp32"
    fp16 = by[("convmlp_s.fp16.onnx", "onnxruntime")]
    assert fp16["precision"] == "fp16" and fp16["agreement"] >= 0.9
    assert all(r["images_per_s"] > 0 for r in data["results"])
    assert "vs torch (pts)" in res.output  # the table was printed too


def test_image_folder_and_list_file_give_the_same_result(photos, tmp_path):
    folder = tmp_path / "folder"
    listing = []
    for i, p in enumerate(photos[:9]):
        cls = f"n0{i % 3}"  # sorted folder names -> labels 0, 1, 2
        (folder / cls).mkdir(parents=True, exist_ok=True)
        (folder / cls / p.name).write_bytes(p.read_bytes())
        listing.append(f"{cls}/{p.name} {i % 3}")
    (tmp_path / "val.txt").write_text("\n".join(listing))
    a = json.loads(_run("--data", folder, "-v", "s", "--json").stdout)
    b = json.loads(_run("--data", folder, "--labels-file", tmp_path / "val.txt", "-v", "s", "--json").stdout)
    assert a["form"] == "folder" and b["form"] == "list" and a["images"] == b["images"] == 9
    assert a["results"][0]["top1"] == b["results"][0]["top1"]
    assert load_dataset(folder).classes == ["n00", "n01", "n02"]


def test_unreadable_images_are_skipped_and_named(photos, tmp_path):
    folder = tmp_path / "d" / "cat"
    folder.mkdir(parents=True)
    for p in photos[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    res = _run("--data", tmp_path / "d", "-v", "s", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["images"] == 3 and data["skipped"] == 1 and "broken.jpg" in data["skipped_files"][0]


@pytest.mark.parametrize(
    ("layout", "code", "message"),
    [
        ("empty", 2, "no images in it"),
        ("loose", 2, "no class folders"),
        ("bad-line", 2, "val.txt:2: expected 'relative/path label_index'"),
        ("out-of-range", 2, "label 1000 is out of range"),
        ("missing", 2, "does not exist"),
        ("all-broken", 1, "none of the 2 images could be read"),
    ],
)
def test_bad_data_sets(photos, tmp_path, layout, code, message):
    root = tmp_path / "data"
    root.mkdir()
    args = ["--data", str(root), "-v", "s"]
    if layout == "loose":
        (root / "a.jpg").write_bytes(photos[0].read_bytes())
    elif layout in ("bad-line", "out-of-range", "missing"):
        (root / "a.jpg").write_bytes(photos[0].read_bytes())
        second = {"bad-line": "a.jpg", "out-of-range": "a.jpg 1000", "missing": "b.jpg 3"}[layout]
        (tmp_path / "val.txt").write_text(f"a.jpg 1\n{second}\n")
        args += ["--labels-file", str(tmp_path / "val.txt")]
    elif layout == "all-broken":
        (root / "c").mkdir()
        (root / "c" / "x.jpg").write_bytes(b"junk")
        (root / "c" / "y.png").write_bytes(b"junk")
    res = CliRunner().invoke(cli.main, ["evaluate", *args])
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output


def test_option_mistakes(photos, tmp_path):
    root = photos[0].parent
    assert _run("--data", root).exit_code == 2
    res = _run("--data", root, "-v", "s", "--json-out", tmp_path)
    assert res.exit_code == 2 and "--json-out" in res.output and "is a folder" in res.output
    res = _run("--data", root, "-v", "s", "--onnx-backend", "openvino")
    assert res.exit_code == 2 and "--onnx-backend goes with --onnx" in res.output


def test_load_dataset_errors_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(tmp_path / "nope")


def test_an_impossible_pair_is_skipped_with_a_note(photos, own_top1, graphs, tmp_path):
    """``--onnx graph.onnx graph.openvino.xml --backend onnxruntime openvino``: the IR on onnxruntime is
    skipped with one note; the three possible rows are evaluated."""
    pytest.importorskip("openvino")
    from export.openvino import write_ir

    xml = write_ir(graphs["fp32"].read_bytes(), tmp_path / "convmlp_s.openvino.xml",
                   {"variant": "s", "kind": "classifier", "precision": "fp32", "num_classes": "1000"})
    root = photos[0].parent
    (tmp_path / "val.txt").write_text("".join(f"{p.name} {t}\n" for p, t in zip(photos, own_top1, strict=True)))
    res = _run("--data", root, "--labels-file", tmp_path / "val.txt", "--onnx", graphs["fp32"], xml,
               "--backend", "onnxruntime", "openvino", "--precision", "fp32", "--batch", "6", "--json")
    assert res.exit_code == 0, res.output
    rows = {(Path(r["source"]).name, r["backend"]) for r in json.loads(res.stdout)["results"]}
    assert rows == {("convmlp_s.onnx", "onnxruntime"), ("convmlp_s.onnx", "openvino"),
                    ("convmlp_s.openvino.xml", "openvino")}
    assert res.stderr.count("convmlp_s.openvino.xml on onnxruntime: skipped") == 1
