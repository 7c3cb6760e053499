"""The CLI reads model files through one record and takes its options in groups (issue: one reader for
model files, a CLI of reusable parts). Each trial case a new user met is here, with its exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import cli
import deploy.commands.validate as validate_mod
from export.onnx import set_metadata


def run(*args: object):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def _strip(src: Path, dst: Path) -> Path:
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.save(proto, str(dst))
    return dst


def _one_line(res) -> bool:
    return res.output.strip().count("\n") == 0 and "Traceback" not in res.output


@pytest.fixture(scope="module")
def graphs(s_graph_pair) -> dict[str, Path]:
    return s_graph_pair


#: the ten classes' names, as ``export --labels`` records them (spaces and non-ASCII survive)
TEN_NAMES = [f"class {i} ({'ÄÖÜ'[i % 3]})" for i in range(10)]


@pytest.fixture(scope="module")
def ten_class(tmp_path_factory) -> dict[str, Path]:
    """A 10-class checkpoint (the official README's ``convmlp_s(num_classes=10)``), exported without
    ``--num-classes`` but with ``--labels``, and its graph stripped of metadata."""
    import torch

    from tests.conftest import trained_like

    root = tmp_path_factory.mktemp("ten")
    ck = root / "ft10.pth"
    torch.save(trained_like("s", seed=3, num_classes=10).state_dict(), ck)
    names = root / "names.txt"
    names.write_text("\r\n".join(TEN_NAMES) + "\r\n\r\n", encoding="utf-8-sig")  # BOM, CRLF, trailing blank line
    res = CliRunner().invoke(cli.main, ["export", "-v", "s", "--weights", str(ck), "--labels", str(names),
                                        "-o", str(root / "out")])
    assert res.exit_code == 0, res.output
    graph = root / "out" / "convmlp_s.onnx"
    return {"checkpoint": ck, "graph": graph, "bare": _strip(graph, root / "bare.onnx"), "names": names}


# --------------------------------------------------------------------------- done-when


def test_stripped_fp16_graph_passes_at_the_fp16_gate_and_says_what_was_inferred(graphs, tmp_path):
    bare = _strip(graphs["fp16"], tmp_path / "bare.fp16.onnx")
    res = run("validate", "--onnx", bare, "--variant", "s")
    assert res.exit_code == 0, res.output
    assert "gate (fp16)" in res.stdout and "PASSED" in res.stdout
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("Note:")]
    assert len(notes) == 1 and "precision fp16 (inferred)" in notes[0]
    data = json.loads(run("validate", "--onnx", bare, "-v", "s", "--json").stdout)
    assert data["tolerance"]["precision"] == "fp16" and "precision" in data["model_facts"]["inferred"]
    res = run("validate", "--onnx", bare)
    assert res.exit_code == 2 and "pass --variant" in res.output and _one_line(res)


def test_ten_class_checkpoint_exports_and_serves_without_num_classes(ten_class, tmp_path):
    meta = {p.key: p.value for p in onnx.load(str(ten_class["graph"])).metadata_props}
    assert meta["num_classes"] == "10"
    res = run("triton", "--onnx", ten_class["bare"], "--repository", tmp_path / "repo", "--model-name", "ft", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["outputs"][0]["dims"] == [10]
    config = (tmp_path / "repo" / "ft" / "config.pbtxt").read_text()
    assert "dims: [ 10 ]" in config and "label_filename" not in config  # the stripped graph names no classes
    assert not (tmp_path / "repo" / "ft" / "labels.txt").exists()
    # the stripped graph validates against its checkpoint: classes inferred, head read from the checkpoint
    res = run("validate", "--onnx", ten_class["bare"], "-v", "s", "--weights", ten_class["checkpoint"])
    assert res.exit_code == 0 and "num_classes 10 (inferred)" in res.stderr, res.output


def test_num_classes_contradicting_the_checkpoint_is_exit_2_before_work(ten_class, tmp_path):
    res = run("export", "-v", "s", "--weights", ten_class["checkpoint"], "--num-classes", "5", "-o", tmp_path / "o")
    assert res.exit_code == 2 and "--num-classes 5 contradicts" in res.output and _one_line(res)
    assert not (tmp_path / "o").exists()


def test_a_graph_and_a_checkpoint_of_other_class_counts_are_refused(ten_class, graphs, make_checkpoint):
    res = run("validate", "--onnx", _strip(graphs["fp32"], ten_class["bare"].parent / "s1000.onnx"), "-v", "s",
              "--weights", ten_class["checkpoint"])
    assert res.exit_code == 2 and "outputs 1000 classes" in res.output and "10-class head" in res.output


def test_export_labels_are_recorded_and_every_reader_names_the_classes(ten_class, photo_folder, tmp_path):
    import deploy
    from deploy.modelfile import describe

    meta = {p.key: p.value for p in onnx.load(str(ten_class["graph"])).metadata_props}
    assert json.loads(meta["labels"]) == TEN_NAMES
    assert describe(ten_class["graph"]).labels == tuple(TEN_NAMES)
    image = sorted(photo_folder.rglob("*.jpg"))[0]
    # the Python API
    with deploy.load(ten_class["graph"]) as model:
        top = model.classify([image], top_k=3)[0]
    assert [s.label for s in top] == [TEN_NAMES[s.index] for s in top]
    # predict: a label column without --labels
    res = run("predict", image, "--onnx", ten_class["graph"], "-k", "3", "--json")
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)["results"][0]["top_k"]
    assert [t["label"] for t in shown] == [TEN_NAMES[t["index"]] for t in shown]
    assert [t["index"] for t in shown] == [s.index for s in top]
    table = run("predict", image, "--onnx", ten_class["graph"], "-k", "3").stdout
    assert "label" in table and TEN_NAMES[top[0].index] in table
    # triton: labels.txt written from the metadata, one name per line, named by the logits
    res = run("triton", "--onnx", ten_class["graph"], "--repository", tmp_path / "repo", "--model-name", "ft")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "repo" / "ft" / "labels.txt").read_text(encoding="utf-8").splitlines() == TEN_NAMES
    assert 'label_filename: "labels.txt"' in (tmp_path / "repo" / "ft" / "config.pbtxt").read_text()


@pytest.mark.parametrize("weights", [True, False])
def test_export_labels_of_another_count_are_exit_2_before_work(ten_class, tmp_path, weights):
    names = tmp_path / "three.txt"
    names.write_text("a\nb\nc\n")
    res = run("export", "-v", "s", *(["--weights", ten_class["checkpoint"]] if weights else []),
              "--labels", names, "-o", tmp_path / "o")
    classes = 10 if weights else 1000  # the checkpoint's head, else ImageNet's
    assert res.exit_code == 2 and f"3 labels but the model has {classes} classes" in res.output and _one_line(res)
    assert not (tmp_path / "o").exists()


def test_recorded_labels_that_do_not_fit_the_graph_are_refused(ten_class, tmp_path):
    from deploy.errors import DeployError
    from deploy.modelfile import describe

    proto = onnx.load(str(ten_class["graph"]))
    set_metadata(proto, {"labels": json.dumps(TEN_NAMES[:3])})
    onnx.save(proto, str(tmp_path / "three.onnx"))
    with pytest.raises(DeployError, match="lists 3 labels but the .* outputs 10 classes"):
        describe(tmp_path / "three.onnx")
    set_metadata(proto, {"labels": json.dumps({"0": "a"})})
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    res = run("predict", sorted(Path(__file__).parent.rglob("*.py"))[0], "--onnx", tmp_path / "bad.onnx")
    assert res.exit_code != 0 and "not a JSON list" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------- the trial's cases


def test_evaluate_refuses_rows_of_different_class_counts(ten_class, photo_folder):
    res = run("evaluate", "--data", photo_folder, "-v", "s", "--onnx", ten_class["graph"])
    assert res.exit_code == 2 and "different class counts" in res.output and "(10 classes)" in res.output
    res = run("evaluate", "--data", photo_folder, "-v", "s", "--weights", ten_class["checkpoint"],
              "--onnx", ten_class["graph"], "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    assert rows[1]["agreement"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Nine real photographs in three class folders (labels 0..2)."""
    from tests.photos import make_photo_set

    root = tmp_path_factory.mktemp("data")
    photos = make_photo_set(root / "flat", 9)
    for i, p in enumerate(photos):
        d = root / "set" / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        p.rename(d / p.name)
    return root / "set"


def test_evaluate_rows_have_distinct_names_and_one_synthetic_note(graphs, photo_folder, tmp_path):
    pytest.importorskip("openvino")
    proto = onnx.load(str(graphs["fp32"]))
    set_metadata(proto, {"weights": "synthetic(seed=0)"})  # as export writes it without --weights
    one, twin = tmp_path / "a" / graphs["fp32"].name, tmp_path / "copy" / graphs["fp32"].name
    for path in (one, twin):
        path.parent.mkdir()
        onnx.save(proto, str(path))
    res = run("evaluate", "--data", photo_folder, "--onnx", one, "--onnx", twin,
              "--onnx-backend", "onnxruntime", "openvino", "--json")
    assert res.exit_code == 0, res.output
    names = [r["name"] for r in json.loads(res.stdout)["results"]]
    assert len(names) == 4 and len(set(names)) == 4
    assert f"copy/{twin.name} on openvino" in names
    assert res.stderr.count("synthetic weights") == 1


def test_evaluate_takes_precision_for_openvino_rows(graphs, photo_folder):
    pytest.importorskip("openvino")
    res = run("evaluate", "--data", photo_folder, "--onnx", graphs["fp32"], "--backend", "openvino",
              "--precision", "f32", "--json")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["results"]
    assert row["runner"] == "openvino[CPU,fp32]" and row["precision"] == "fp32"
    res = run("evaluate", "--data", photo_folder, "-v", "s", "--precision", "bf16")
    assert res.exit_code == 2 and "--precision bf16 applies to rows on --backend openvino" in res.output


def test_evaluate_names_its_own_need_for_a_classifier(photo_folder, s_onnx, tmp_path):
    feats = s_onnx(tmp_path / "convmlp_s.features.onnx", features=True)
    res = run("evaluate", "--data", photo_folder, "--onnx", feats)
    assert res.exit_code == 2 and "evaluate needs a classifier" in res.output and _one_line(res)


def test_per_layer_on_an_fp32_graph_is_refused_before_any_work(graphs, monkeypatch):
    def never(*a, **k):
        raise AssertionError("validation ran")

    monkeypatch.setattr(validate_mod, "compare_runner", never)
    res = run("validate", "--onnx", graphs["fp32"], "--per-layer")
    assert res.exit_code == 2 and "already is FP32" in res.output and _one_line(res)


def test_per_layer_reference_must_be_this_models_fp32_graph(graphs, ten_class, monkeypatch):
    def never(*a, **k):
        raise AssertionError("validation ran")

    monkeypatch.setattr(validate_mod, "compare_runner", never)
    res = run("validate", "--onnx", graphs["fp16"], "--per-layer", "--reference-onnx", graphs["fp16"])
    assert res.exit_code == 2 and "computes in fp16" in res.output and _one_line(res)
    res = run("validate", "--onnx", graphs["fp16"], "--per-layer", "--reference-onnx", ten_class["graph"])
    assert res.exit_code == 2 and "10-class classifier" in res.output and _one_line(res)
    res = run("validate", "--onnx", graphs["fp16"], "--per-layer", "--reference-onnx", "cli.py")
    assert res.exit_code == 1 and "cli.py: not a readable ONNX model" in res.output and _one_line(res)


@pytest.mark.skipif(not os.path.isdir("/proc") or os.geteuid() != 0 and not os.access("/proc", os.W_OK),
                    reason="needs Linux /proc")
def test_unwritable_json_out_is_refused_before_any_work(graphs, tmp_path):
    res = run("predict", "cli.py", "--onnx", graphs["fp32"], "--json-out", "/proc/x.json")
    assert res.exit_code == 2 and "--json-out" in res.output and "takes no new file" in res.output
    repo = tmp_path / "repo"
    res = run("triton", "--onnx", graphs["fp32"], "--repository", repo, "--json-out", "/sys/x.json")
    assert res.exit_code == 2 and not repo.exists()


def test_json_out_under_a_file_says_it_is_a_file(tmp_path):
    (tmp_path / "good.sha").write_text("x")
    res = run("profile", "-v", "s", "--json-out", tmp_path / "good.sha" / "x.json")
    assert res.exit_code == 2 and "good.sha is a file, not a folder" in res.output


def test_precision_has_one_name_everywhere(graphs):
    pytest.importorskip("openvino")
    res = run("benchmark", "--onnx", graphs["fp32"], "--backend", "openvino", "--precision", "f32", "-r", "64",
              "--iterations", "2", "--warmup-ms", "0", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    (row,) = data["results"]
    assert row["runner"] == "openvino[CPU,fp32]" and row["precision"] == "fp32"
    assert data["settings"]["target"]["runtime_precision"] == "fp32"
    assert data["versions"]["openvino"]
    res = run("benchmark", "--onnx", graphs["fp32"], "--backend", "openvino", "--precision", "f32", "-r", "64",
              "--iterations", "2", "--warmup-ms", "0")
    assert "openvino " in res.stdout.splitlines()[-3] or any(
        ln.startswith(("AMD", "Intel")) and "openvino" in ln for ln in res.stdout.splitlines())


def test_help_texts_name_every_backend_and_gate():
    bench = run("benchmark", "--help").output
    assert "OpenVINO" in bench.split("Options:")[0]
    val = run("validate", "--help").output.split("Options:")[0]
    assert all(p in val for p in ("(fp32)", "(fp16)", "(bf16)", "(int8)"))


def test_doctor_suggests_nothing_that_breaks_a_cpu_install_and_aligns_its_table():
    res = run("doctor")
    assert res.exit_code == 0
    assert "pip install nvidia-modelopt" not in res.output
    table = res.output.split("\n\n")[-1].splitlines()
    ok_col = table[0].index("ok")
    assert all(ln[ok_col:ok_col + 3] in ("yes", "NO ") for ln in table[2:] if ln.strip())


# --------------------------------------------------------------------------- the option groups


def test_every_command_takes_its_options_from_the_groups():
    help_texts: dict[str, set[str]] = {"--json": set(), "--json-out": set()}
    for name, command in cli.main.commands.items():
        opts = {o: p for p in command.params for o in getattr(p, "opts", [])}
        assert "--json" in opts and "--json-out" in opts, name
        for flag in help_texts:
            help_texts[flag].add(opts[flag].help.split(" '--json FILE'")[0])
    assert all(len(texts) == 1 for texts in help_texts.values()), help_texts


def test_exactly_one_model_source_is_checked_once(graphs):
    for args, message in (
        (["validate"], "give exactly one of --engine or --onnx"),
        (["predict", "x.jpg", "-v", "s", "--onnx", graphs["fp32"]], "exactly one of --engine, --onnx or --variant"),
        (["triton", "--repository", "r"], "give exactly one of --engine or --onnx"),
        (["build"], "give --onnx PATH"),
        (["benchmark"], "nothing to benchmark"),
        (["benchmark", "--onnx", graphs["fp32"], "--weights", "cli.py"], "go with --variant"),
    ):
        res = run(*args)
        assert res.exit_code == 2 and message in res.output, (args, res.output)


def test_an_ir_on_onnxruntime_is_one_line_everywhere(tmp_path):
    xml = tmp_path / "x.openvino.xml"
    xml.write_text("<net><layers/></net>")
    xml.with_suffix(".bin").write_bytes(b"")
    res = run("benchmark", "--onnx", xml, "--backend", "onnxruntime")
    assert res.exit_code == 2 and "run it with --backend openvino" in res.output and _one_line(res)
    res = run("validate", "--onnx", xml, "--backend", "onnxruntime")
    assert res.exit_code == 2 and "run it with --backend openvino" in res.output and _one_line(res)
    res = run("validate", "--onnx", "cli.py", "--per-layer", "--reference-onnx", xml)
    assert res.exit_code == 2 and "is not an ONNX graph" in res.output and _one_line(res)


def _project_imports() -> dict[str, set[str]]:
    """Each project module (dotted name) and the project modules it imports (``from x import y`` counts
    ``x.y`` when that is a module)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for top in ("convmlp", "deploy", "export") for p in (root / top).rglob("*.py")}
    files["cli"] = root / "cli.py"
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                name = ".".join(x for x in ((base if node.level else ""), node.module or "") if x)
                names = [name] + [f"{name}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found |= {n for n in names if n in files}
        graph[mod] = found - {mod}
    return graph


def test_imports_run_one_way():
    """Layers, top down: the CLI (``cli.py``, ``deploy.cli``), the command libraries (``deploy.commands``),
    the exporter, the core (backends, loader, runners, model files...), the model package. No module
    imports one from a higher layer, and the exporter takes nothing from the command libraries."""
    rules = {
        "convmlp": ("deploy", "export", "cli"),
        "deploy.modelfile": ("deploy.runners", "deploy.trt", "deploy.commands", "deploy.cli", "export", "cli"),
        "deploy.runners": ("deploy.commands", "deploy.trt.builder", "deploy.cli", "export", "cli"),
        "deploy.commands": ("deploy.cli", "export", "cli"),
        "deploy": ("deploy.commands", "deploy.cli", "export", "cli"),
        "export": ("deploy.commands", "deploy.cli", "cli"),
    }
    graph = _project_imports()
    bad = []
    for mod, imported in graph.items():
        folder = max((f for f in rules if mod == f or mod.startswith(f + ".")), key=len, default=None)
        if folder is None:
            continue
        if folder == "deploy" and mod.startswith(("deploy.commands", "deploy.cli")):
            continue  # their own rows above
        bad += [f"{mod} imports {n}" for n in imported for b in rules[folder] if n == b or n.startswith(b + ".")]
    assert not bad, bad


def test_no_import_circle():
    """No chain of imports among the project's modules leads back to where it started (lazy imports
    inside functions count too: a circle there is a layering mistake waiting for a module-level import)."""
    graph = _project_imports()
    for mod in graph:  # a package imports its own submodules by design: drop those edges
        graph[mod] = {n for n in graph[mod] if not n.startswith(mod + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_contradicting_metadata_is_one_line(graphs, tmp_path):
    proto = onnx.load(str(graphs["fp32"]))
    set_metadata(proto, {"kind": "features"})
    onnx.save(proto, str(tmp_path / "x.onnx"))
    res = run("benchmark", "--onnx", tmp_path / "x.onnx", "-r", "64", "--iterations", "1")
    assert res.exit_code == 1 and "kind=features" in res.output and _one_line(res)


def test_no_backend_name_is_compared_outside_the_backend_table():
    """Commands and modules ask the ``deploy.backends`` rows what a backend does; none compares its name."""
    import ast

    from deploy.backends import BACKENDS

    root = Path(__file__).resolve().parents[1]
    names = set(BACKENDS)

    def named(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    found = []
    for path in [root / "cli.py", *(root / "deploy").rglob("*.py"), *(root / "export").rglob("*.py")]:
        if path.name == "backends.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(named(n) for n in (node.left, *node.comparators)):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, found
