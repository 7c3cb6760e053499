"""Builder decisions per TensorRT major version, ONNX inspection, and the ``build`` CLI's refusals.

No TensorRT here: these test our logic only. Real builds are in test_trt_runner.py (``gpu``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import cli
from deploy.errors import BackendUnavailable, DeployError
from deploy.modelfile import describe
from deploy.modelfile.profiles import ShapeProfile
from deploy.trt import builder as trt_builder
from deploy.trt.builder import BuildOptions, build_engine, default_engine_path, plan_build
from deploy.trt.version import INSTALL_HINT, import_tensorrt, parse_version, trt_major


def tiny_onnx(path: Path, *, fp16: bool = False, input_name: str = "input", meta: dict | None = None) -> Path:
    """Conv 3->4 + global pool: the same I/O contract as an exported classifier, a few hundred bytes."""
    import numpy as np

    dtype = np.float16 if fp16 else np.float32
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), dtype=dtype), "w")
    nodes = []
    x = input_name
    if fp16:
        nodes.append(helper.make_node("Cast", [x], ["x16"], to=TensorProto.FLOAT16))
        x = "x16"
    nodes += [
        helper.make_node("Conv", [x, "w"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", ["f"], ["logits"], to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", ["f"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


# ----------------------------------------------------------------------------- version-dependent plan


def test_trt10_strongly_typed_fp16_graph() -> None:
    plan = plan_build(BuildOptions(), graph_precision="fp16", tensorrt_major=10)
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert "FP16" not in plan.set_flags and plan.precision == "fp16"
    assert plan.clear_flags == ()  # TF32 only matters for FP32 tensors


def test_trt11_has_no_network_or_precision_flags() -> None:
    plan = plan_build(BuildOptions(), graph_precision="fp16", tensorrt_major=11)
    assert plan.network_flags == ()
    assert plan.set_flags == () and plan.precision == "fp16"


@pytest.mark.parametrize("major", [10, 11])
def test_fp32_graph_gives_fp32_engine_without_tf32(major: int) -> None:
    plan = plan_build(BuildOptions(), graph_precision="fp32", tensorrt_major=major)
    assert plan.precision == "fp32"
    assert "TF32" in plan.clear_flags and "FP16" not in plan.set_flags
    allowed = plan_build(BuildOptions(tf32=True), graph_precision="fp32", tensorrt_major=major)
    assert "TF32" not in allowed.clear_flags


def test_weak_fp16_only_on_trt10_and_fp32_graphs() -> None:
    plan = plan_build(BuildOptions(weak_fp16=True), graph_precision="fp32", tensorrt_major=10)
    assert plan.network_flags == () and "FP16" in plan.set_flags and plan.precision == "fp16"
    with pytest.raises(DeployError, match="TensorRT 11 removed weak typing"):
        plan_build(BuildOptions(weak_fp16=True), graph_precision="fp32", tensorrt_major=11)
    with pytest.raises(DeployError, match="already FP16"):
        plan_build(BuildOptions(weak_fp16=True), graph_precision="fp16", tensorrt_major=10)


@pytest.mark.parametrize("major", [10, 11])
def test_compat_and_resources_in_plan(major: int) -> None:
    opts = BuildOptions(workspace_gib=1.5, opt_level=5, hardware_compat="ampere+", version_compatible=True)
    plan = plan_build(opts, graph_precision="fp16", tensorrt_major=major)
    assert plan.hardware_level == "AMPERE_PLUS"
    assert "VERSION_COMPATIBLE" in plan.set_flags
    assert plan.workspace_bytes == int(1.5 * (1 << 30)) and plan.opt_level == 5
    same = plan_build(BuildOptions(hardware_compat="same-cc"), graph_precision="fp16", tensorrt_major=major)
    assert same.hardware_level == "SAME_COMPUTE_CAPABILITY" and "VERSION_COMPATIBLE" not in same.set_flags


def test_build_options_validation() -> None:
    for bad in ({"opt_level": 6}, {"opt_level": -1}, {"workspace_gib": 0}, {"hardware_compat": "turing+"}):
        with pytest.raises(ValueError):
            BuildOptions(**bad)  # type: ignore[arg-type]


def test_version_parsing() -> None:
    assert parse_version("10.13.0.35") == (10, 13, 0, 35)
    assert parse_version("11.0.0rc1") == (11, 0, 0)
    assert trt_major("11.4.1") == 11
    with pytest.raises(ValueError):
        parse_version("abc")


def test_default_engine_path() -> None:
    assert default_engine_path("a/convmlp_s.fp16.onnx") == Path("a/convmlp_s.fp16.engine")
    assert default_engine_path("a/model") == Path("a/model.engine")


# ----------------------------------------------------------------------------- ONNX inspection


def test_describe_reads_metadata_and_precision(tmp_path: Path) -> None:
    meta = {"variant": "s", "num_classes": "4", "kind": "classifier", "precision": "fp16"}
    info = describe(tiny_onnx(tmp_path / "a.onnx", fp16=True, meta=meta))
    assert (info.variant, info.num_classes, info.kind, info.precision) == ("s", 4, "classifier", "fp16")
    assert info.input_name == "input" and info.output_names == ["logits"]
    assert {"variant", "num_classes", "kind", "precision"} <= info.recorded


def test_describe_falls_back_to_the_graph(tmp_path: Path) -> None:
    fp32 = describe(tiny_onnx(tmp_path / "b.onnx"))
    assert (fp32.precision, fp32.variant, fp32.num_classes, fp32.kind) == ("fp32", None, 4, "classifier")
    assert set(fp32.inferred) == {"kind", "precision", "num_classes", "preprocessing"}
    assert describe(tiny_onnx(tmp_path / "c.onnx", fp16=True)).precision == "fp16"
    garbage = tmp_path / "bad.onnx"
    garbage.write_bytes(b"\x00not an onnx file" * 10)
    with pytest.raises(DeployError, match="not a readable ONNX"):
        describe(garbage)


# ----------------------------------------------------------------------------- build without TensorRT


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise BackendUnavailable(INSTALL_HINT)

    monkeypatch.setattr(trt_builder, "import_tensorrt", missing)


def test_import_tensorrt_here_is_unavailable_or_real() -> None:
    # tensorrt-stubs alone installs an importable, empty 'tensorrt' folder: that must count as absent
    try:
        trt = import_tensorrt()
    except BackendUnavailable as exc:
        assert "pip install 'convmlp-deploy[trt]'" in str(exc)
    else:
        assert hasattr(trt, "Builder")


def test_build_engine_checks_names_before_tensorrt(tmp_path: Path, no_tensorrt: None) -> None:
    onnx_path = tiny_onnx(tmp_path / "m.onnx", input_name="images")
    with pytest.raises(DeployError, match="images"):
        build_engine(onnx_path, [ShapeProfile.fixed((1, 3, 64, 64))])
    with pytest.raises(DeployError, match="no optimization profile"):
        build_engine(tiny_onnx(tmp_path / "n.onnx"), [])
    with pytest.raises(DeployError, match="overwrite the ONNX"):
        build_engine(tmp_path / "n.onnx", [ShapeProfile.fixed((1, 3, 64, 64))], output=tmp_path / "n.onnx")


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, ["build", *args])
    return result.exit_code, result.output


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "convmlp_s.fp16.onnx", fp16=True)


def _no_artifacts(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["convmlp_s.fp16.onnx"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-shape", "1x3x64"], "not a shape"),
        (["--min-shape", "1x3x64x64", "--opt-shape", "1x3x64x64", "--max-shape", "1x3x16x64"], ">= 32"),
        (["--min-shape", "4x3x64x64", "--opt-shape", "2x3x64x64", "--max-shape", "8x3x64x64"], "min <= opt <= max"),
        (["--min-shape", "1x3x64x64"], "give all three"),
        (["--profile", "1x3x64x64:2x3x64x64:4x3x64x64", "--min-shape", "1x3x64x64"], "not both"),
        (["--profile", "1x3x64x64:2x3x64x64"], "MIN:OPT:MAX"),
        (["--profile", "1x1x64x64:1x1x64x64:1x1x64x64"], "3 channels"),
        (["--opt-level", "7"], "0<=x<=5"),
        (["--workspace-gib", "0"], "workspace-gib"),
        (["--hardware-compat", "turing+"], "hardware-compat"),
    ],
)
def test_cli_usage_errors_exit_2(model: Path, args: list[str], message: str, no_tensorrt: None) -> None:
    code, out = run_cli("--onnx", str(model), *args)
    assert code == 2, out
    assert message in out
    assert _no_artifacts(model.parent)


def test_cli_missing_onnx_exit_2(tmp_path: Path) -> None:
    code, out = run_cli("--onnx", str(tmp_path / "nope.onnx"))
    assert code == 2 and "does not exist" in out


def test_cli_without_tensorrt_exit_1_one_line(model: Path, no_tensorrt: None) -> None:
    code, out = run_cli("--onnx", str(model), "--profile", "1x3x64x64:2x3x64x64:4x3x64x64", "2x3x96x96:2x3x96x96:2x3x96x96")
    assert code == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'convmlp-deploy[trt]'" in lines[0]
    assert "Traceback" not in out
    assert _no_artifacts(model.parent)


# ----------------------------------------------------------------------------- TensorRT refusals (fake bindings)


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    from .trt_fakes import FakeTensorRT

    trt = FakeTensorRT().activate()
    monkeypatch.setitem(sys.modules, "tensorrt", trt.module)
    return trt


PROFILES = [ShapeProfile((1, 3, 64, 64), (2, 3, 96, 96), (4, 3, 128, 128)), ShapeProfile.fixed((8, 3, 224, 224))]


def test_add_profiles_sets_every_profile_on_the_input(fake_trt) -> None:
    from .trt_fakes import Builder, FakeBuilderConfig

    config = FakeBuilderConfig()
    trt_builder.add_profiles(Builder(), config, "input", PROFILES, trt_builder.Messages())
    assert [p.shapes["input"] for p in config.profiles] == [(p.min, p.opt, p.max) for p in PROFILES]


@pytest.mark.parametrize("selector", ["min", "opt", "max"])
def test_set_shape_runtime_error_becomes_deploy_error_naming_the_shapes(fake_trt, selector: str) -> None:
    from .trt_fakes import Builder, FakeBuilderConfig

    # IOptimizationProfile.set_shape raises RuntimeError (it never returns False) when TensorRT refuses a shape
    with pytest.raises(DeployError) as err:
        trt_builder.add_profiles(Builder(refuse=selector), FakeBuilderConfig(), "input", PROFILES, trt_builder.Messages())
    msg = str(err.value)
    assert "min 1x3x64x64, opt 2x3x96x96, max 4x3x128x128" in msg and "'input'" in msg
    assert f"Shape provided for {selector} is inconsistent" in msg
    assert err.value.__cause__ is None and "\n" not in msg


def test_add_optimization_profile_minus_one_becomes_deploy_error(fake_trt) -> None:
    from .trt_fakes import Builder, FakeBuilderConfig

    messages = trt_builder.Messages()
    messages.add("ERROR", "profile 1 is invalid")
    with pytest.raises(DeployError, match="min 8x3x224x224, opt 8x3x224x224, max 8x3x224x224.*profile 1 is invalid"):
        trt_builder.add_profiles(Builder(), FakeBuilderConfig(accept=1), "input", PROFILES, messages)


def test_same_cc_on_tensorrt_10_8_is_a_deploy_error(fake_trt) -> None:
    # HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY exists from TensorRT 10.9 on (pyCore.cpp);
    # the NGC 25.01 image has 10.8, where the attribute lookup raised AttributeError
    assert trt_builder._hardware_level("AMPERE_PLUS") == "AMPERE_PLUS"
    with pytest.raises(DeployError, match="TensorRT 10.8.0.43 has no HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"):
        trt_builder._hardware_level("SAME_COMPUTE_CAPABILITY")
