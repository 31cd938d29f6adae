"""The JupyterLab extension as shipped: wheel contents, installation, TS unit tests.

These reuse what ``pip install -e .`` built (labextension/node_modules and
kernelkit/labextension); nothing here downloads a browser.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABEXT = ROOT / "labextension"
BUILT = ROOT / "kernelkit" / "labextension"
VERSION = json.loads((LABEXT / "package.json").read_text())["version"]
SHARE = "share/jupyter/labextensions/kernelkit"

pytestmark = pytest.mark.jupyterlab  # jupyter-labextension, jlpm and build: the test extra


def _env() -> dict[str, str]:
    # jlpm, jupyter-builder and jupyter-labextension live beside this Python.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the test extras (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this tree (reusing the built extension when present)."""
    out = tmp_path_factory.mktemp("wheel")
    backends = ("hatchling", "hatch_jupyter_builder", "hatch_nodejs_version")
    # Without isolation when the backends are here (seconds instead of a minute).
    local = all(importlib.util.find_spec(backend) for backend in backends)
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)]
    command += ["--no-isolation"] if local else []
    result = _run(command, ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [built] = out.glob("kernelkit-*.whl")
    return built


def test_wheel_carries_the_prebuilt_extension(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    data = f"kernelkit-{VERSION}.data/data/{SHARE}"
    assert f"{data}/package.json" in names
    assert f"{data}/install.json" in names
    assert f"{data}/static/style.js" in names
    assert any(re.fullmatch(rf"{re.escape(data)}/static/remoteEntry\.\w+\.js", n) for n in names)
    assert f"{data}/schemas/kernelkit/plugin.json" in names
    with zipfile.ZipFile(wheel) as archive:
        package = json.loads(archive.read(f"{data}/package.json"))
        install = json.loads(archive.read(f"{data}/install.json"))
    assert package["name"] == "kernelkit"
    assert package["version"] == VERSION
    assert package["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    assert install["packageName"] == "kernelkit"
    assert install["packageManager"] == "python"


def test_the_built_extension_matches_the_source_version():
    # The hook's ensured targets, and the same version as package.json.
    assert (BUILT / "static" / "style.js").is_file()
    built = json.loads((BUILT / "package.json").read_text())
    assert built["version"] == VERSION
    import kernelkit

    [path] = kernelkit._jupyter_labextension_paths()
    assert path == {"src": "labextension", "dest": "kernelkit"}


def test_jupyter_lists_kernelkit_enabled_ok():
    result = _run([_tool("jupyter-labextension"), "list"], ROOT, timeout=120)
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert re.search(rf"^\s*kernelkit v{re.escape(VERSION)} enabled OK", text, re.M), text


def test_typescript_unit_tests_pass():
    jlpm = _tool("jlpm")
    if not (LABEXT / "node_modules").is_dir():  # normally left by pip install -e .
        installed = _run([jlpm, "install"], LABEXT, timeout=600)
        assert installed.returncode == 0, installed.stdout[-3000:]
    result = _run([jlpm, "test"], LABEXT, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    passed = int(re.search(r"^# pass (\d+)$", output, re.M).group(1))
    failed = int(re.search(r"^# fail (\d+)$", output, re.M).group(1))
    assert failed == 0
    assert passed >= 30, output[-3000:]
