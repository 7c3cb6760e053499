"""Static check of our TensorRT calls against NVIDIA's API, without TensorRT.

CI installs ``tensorrt-stubs`` (``pip install --no-deps tensorrt-stubs==10.13.0.35.1``).
Its generated ``.pyi`` files do not parse as they are; a temporary copy is
patched (a parameter named ``in``, a parameter without default after defaulted
ones, an import of ``tensorrt_libs``) and mypy checks ``deploy/trt`` and the
TensorRT runner against it, so a misspelled TensorRT attribute or a wrong
argument fails this test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["deploy/trt", "deploy/runners/tensorrt.py", "deploy/runners/trt_cuda.py", "deploy/commands/bench/layer_times.py"]
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")

_DEF = re.compile(r"^(\s*def \w+\()(.*)(\)\s*(?:->.*)?:.*)$")


def _installed_stubs() -> Path | None:
    """site-packages folder holding tensorrt-stubs' ``tensorrt_bindings/tensorrt.pyi``, if installed."""
    for entry in sys.path:
        base = Path(entry or ".")
        if (base / "tensorrt_bindings" / "tensorrt.pyi").is_file() and (base / "tensorrt" / "__init__.pyi").is_file():
            return base
    return None


def _fix_def(line: str) -> str:
    """Rename a parameter ``in`` and give later parameters a default once one has one."""
    m = _DEF.match(line)
    if not m:
        return line
    head, params, tail = m.groups()
    out, seen_default = [], False
    for param in (p.strip() for p in params.split(", ")) if params else []:
        name = param.split(":")[0].split("=")[0].strip()
        if name == "in":
            param = "in_" + param[2:]
        if name.startswith("*"):
            seen_default = False
        elif "=" in param:
            seen_default = True
        elif seen_default and name != "/":
            param += " = ..."
        out.append(param)
    return head + ", ".join(out) + tail


def patch_stub_text(text: str) -> str:
    """The fixes tensorrt-stubs 10.13 needs before mypy accepts it."""
    lines = []
    for line in text.splitlines():
        if re.match(r"^\s*import tensorrt_libs\b", line):
            continue  # runtime-only helper package; no stub exists
        lines.append(_fix_def(line))
    return "\n".join(lines) + "\n"


def patched_stubs(dest: Path) -> Path:
    src = _installed_stubs()
    assert src is not None
    for pkg in STUB_PACKAGES:
        for pyi in (src / pkg).rglob("*.pyi"):
            target = dest / pkg / pyi.relative_to(src / pkg)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(patch_stub_text(pyi.read_text()))
    return dest


def run_mypy(paths: list[str], stubs: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    config = cache.parent / "mypy.ini"
    config.write_text(
        "[mypy]\n"
        "follow_imports = silent\n"
        "ignore_missing_imports = True\n"
        "warn_unused_ignores = False\n"
        # the generated stubs still shadow builtins (a module variable named ``bool``...): not our code
        # heavy third-party packages are not what this test checks: treat them as Any (fast)
        "[mypy-torch,torch.*,numpy,numpy.*,onnx,onnx.*]\n"
        "follow_imports = skip\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\n"
        "ignore_errors = True\n"
    )
    env = {**os.environ, "MYPYPATH": str(stubs)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(cache),
         "--no-error-summary", "--hide-error-context", *extra, *paths],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


needs_stubs = pytest.mark.skipif(
    _installed_stubs() is None or importlib.util.find_spec("mypy") is None,
    reason="tensorrt-stubs (pip install --no-deps tensorrt-stubs==10.13.0.35.1) or mypy not installed",
)


def test_patch_fixes_each_known_defect() -> None:
    assert _fix_def("    def f(self, in: list[int], out: int) -> int:") == (
        "    def f(self, in_: list[int], out: int) -> int:"
    )
    fixed = _fix_def("    def g(self, a: int, b: int = None, c: int) -> None:")
    assert fixed == "    def g(self, a: int, b: int = None, c: int = ...) -> None:"
    assert _fix_def("    def h(self, *args, key: int) -> None:") == "    def h(self, *args, key: int) -> None:"
    assert "tensorrt_libs" not in patch_stub_text("import os\nimport tensorrt_libs as tensorrt_libs\nx: int\n")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return patched_stubs(tmp_path_factory.mktemp("trt_stubs"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy") / "cache"  # shared: the second run reuses the stubs' analysis


@needs_stubs
def test_our_tensorrt_calls_typecheck(stubs: Path, cache: Path) -> None:
    result = run_mypy(TARGETS, stubs, cache)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_stubs
@pytest.mark.parametrize(
    ("module", "good", "bad", "error"),
    [
        ("deploy/trt/builder.py", "trt.MemoryPoolType.WORKSPACE", "trt.MemoryPoolType.WORKSPACES",
         'has no attribute "WORKSPACES"'),
        ("deploy/runners/tensorrt.py", "runtime.engine_host_code_allowed = True",
         "runtime.engine_host_code_allow = True", '"Runtime" has no attribute "engine_host_code_allow"'),
        ("deploy/runners/tensorrt.py", "ExecutionContextAllocationStrategy.USER_MANAGED",
         "ExecutionContextAllocationStrategy.USER_MANAGE", 'has no attribute "USER_MANAGE"'),
        ("deploy/runners/tensorrt.py", "context.set_device_memory(self._memory.data_ptr(), self.device_memory_bytes)",
         "context.set_device_memory(self._memory.data_ptr())", 'Missing positional argument "size"'),
    ],
)
def test_a_misspelled_tensorrt_attribute_fails(
    stubs: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory, module: str, good: str, bad: str, error: str
) -> None:
    work = tmp_path_factory.mktemp("typo")
    src = (ROOT / module).read_text()
    assert good in src
    typo = work / Path(module).name
    typo.write_text(src.replace(good, bad))
    # mypy reads the typo'd copy in place of the real module (same package, same imports); a copy of the
    # shared cache keeps the stubs' analysis without reusing another typo's result for the same module
    own_cache = work / "cache"
    if cache.is_dir():
        shutil.copytree(cache, own_cache)
    result = run_mypy([module], stubs, own_cache, "--shadow-file", module, str(typo))
    assert result.returncode != 0
    assert error in result.stdout, result.stdout
