"""The C++ sample follows the same I/O contract as everything else (convmlp/spec.py).

It cannot be compiled without TensorRT headers; this checks what can be checked
without them: tensor names, the calls of the documented flow, the CMake wiring.
"""

from __future__ import annotations

import re
from pathlib import Path

from convmlp.spec import io_spec

CPP = Path(__file__).resolve().parents[2] / "deploy" / "cpp"


def _constant(source: str, name: str) -> str:
    m = re.search(rf'constexpr const char\* {name} = "([^"]+)";', source)
    assert m, f"{name} not found in main.cpp"
    return m.group(1)


def test_tensor_names_come_from_the_spec() -> None:
    source = (CPP / "main.cpp").read_text()
    spec = io_spec("s")
    assert _constant(source, "kInputName") == spec.input_names[0]
    assert _constant(source, "kOutputName") == spec.output_names[0]
    # no other string literal spells a tensor name: every use goes through the constants
    for name in (spec.input_names[0], spec.output_names[0]):
        assert source.count(f'"{name}"') == 1


def test_sample_uses_the_name_based_dynamic_shape_flow() -> None:
    source = (CPP / "main.cpp").read_text()
    for call in (
        "deserializeCudaEngine", "createExecutionContext", "setOptimizationProfileAsync",
        "setInputShape", "setTensorAddress", "enqueueV3", "getProfileShape",
    ):
        assert f"{call}(" in source, call
    for gone in ("enqueueV2", "getBindingIndex", "setBindingDimensions"):  # removed in TensorRT 10
        assert gone not in source


def test_cmake_finds_tensorrt_and_cudart() -> None:
    cmake = (CPP / "CMakeLists.txt").read_text()
    assert "TENSORRT_ROOT" in cmake and "NvInfer.h" in cmake and "nvinfer" in cmake
    assert "CUDA::cudart" in cmake and "main.cpp" in cmake
