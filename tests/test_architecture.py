"""The layering the README's Design section promises, kept by import-linter.

The contracts live in pyproject.toml (``[tool.importlinter]``): the core knows no
view, no IPython, no session and not the JupyterLab link (``kernelkit.transport``); views
never reach the session; the link never reaches a view, the session or the magic; strategy
reads devices, never the other way; the session package reads one way (cell -> fits ->
registry). import-linter's graph (grimp) holds every import,
the lazy ones inside functions too. The second test shows that on a small package
laid out like kernelkit's: each arrow the design forbids, made there inside a
function, is reported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(
        [str(LINT), str(config), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_layering_holds():
    done = lint(ROOT, ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in done.stdout


#: The arrows issue 16 found, each made inside a function as they were: (importer, imported).
FORBIDDEN = [
    ("kernelkit.callback", "kernelkit.views.progress"),
    ("kernelkit.lr_find", "kernelkit.views.lr_find"),
    ("kernelkit.workers", "kernelkit.views.progress"),
    ("kernelkit.freezing", "kernelkit.session"),
    ("kernelkit.ledger", "ipywidgets"),
    ("kernelkit.callback", "IPython"),
    ("kernelkit.views.card", "kernelkit.session"),
    ("kernelkit.devices", "kernelkit.strategy"),
    ("kernelkit.transport.labcomm", "kernelkit.views.progress"),
    ("kernelkit.transport.labcomm", "kernelkit.session"),
    ("kernelkit.status", "kernelkit.transport.labcomm"),
    # The cycle the session package's split avoids: the registry is handed the fit route.
    ("kernelkit.session.registry", "kernelkit.session.fits"),
]


def _module_file(package_root: Path, name: str) -> Path:
    parts = name.split(".")
    for i in range(1, len(parts)):  # every package on the way has an __init__
        init = package_root.joinpath(*parts[:i], "__init__.py")
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()
    if package_root.joinpath(*parts).is_dir():
        return package_root.joinpath(*parts, "__init__.py")
    return package_root.joinpath(*parts[:-1], parts[-1] + ".py")


def test_the_contracts_catch_each_arrow_the_design_forbids(tmp_path):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    names = {
        "kernelkit.views.progress", "kernelkit.views.lr_find", "kernelkit.views.card",
        "kernelkit.transport.labcomm",
    }  # fmt: skip
    for contract in config["contracts"]:
        if contract["type"] == "layers":  # every layer of each container, "a | b" as two
            names.update(
                f"{container}.{tail.strip()}"
                for container in contract["containers"]
                for layer in contract["layers"]
                for tail in layer.split("|")
            )
        else:
            names.update(contract["source_modules"] + contract["forbidden_modules"])
    internal = sorted(n for n in names if n.startswith("kernelkit."))
    # Packages first (kernelkit.views holds modules), then the modules themselves.
    packages = {n for n in internal if any(m.startswith(n + ".") for m in internal)}
    for name in sorted(packages):
        path = tmp_path.joinpath(*name.split("."), "__init__.py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    for name in internal:
        path = _module_file(tmp_path, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("")
    # The external packages are in the graph through what may import them: the magic.
    magic = _module_file(tmp_path, "kernelkit.magics")
    magic.write_text("import IPython\nimport ipywidgets\nimport plotly\n")
    for importer, imported in FORBIDDEN:
        path = _module_file(tmp_path, importer)
        path.write_text(
            path.read_text()
            + textwrap.dedent(
                f"""
                def _lazy_{len(path.read_text())}():
                    import {imported}
                """
            )
        )
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text((ROOT / "pyproject.toml").read_text())
    done = lint(tmp_path, pyproject)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 0 kept, 5 broken." in done.stdout, done.stdout[-3000:]
    for importer, imported in FORBIDDEN:
        assert f"{importer} -> {imported} (l." in done.stdout, (importer, imported, done.stdout)


def test_the_pure_modules_type_check_strictly(tmp_path):
    """mypy --strict over the files pyproject.toml lists ([tool.mypy])."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Success: no issues found in 11 source files" in done.stdout
