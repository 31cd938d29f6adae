"""Real-browser harness: JupyterLab + headless system Chromium via Playwright.

One JupyterLab server per test session (127.0.0.1, a free port, a token, a
temporary root and settings), one Chromium per session, a fresh browser
context per test. Every wait is for a state (a DOM node, an idle kernel, a
text) with a generous timeout; nothing sleeps. A failing test leaves a
screenshot and the browser console under ``test-artifacts/``.

Needs: ``playwright`` (pip) and Chromium at ``/usr/bin/chromium`` (Debian's
``chromium`` package; override with ``KERNELKIT_CHROMIUM``). Playwright never
downloads a browser here. Tests skip when either is missing, except under ``make test``
(``KERNELKIT_REQUIRE_BROWSER=1``), which installed both: there they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("KERNELKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_S = 60.0
TIMEOUT_MS = int(TIMEOUT_S * 1000)

#: The visible notebook (a restored workspace may hold hidden ones).
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
#: kernelkit's status-bar item.
STATUS_ITEM = "#jp-main-statusbar .kk-StatusItem"


# ------------------------------------------------------------------ server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (read from /proc; kernels run in their own session)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_exit(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        if alive:
            # A short poll interval while processes exit, not a fixed sleep.
            time.sleep(0.1)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@dataclass
class LabServer:
    """A running ``jupyter lab``."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    kernel_pids: set[int] = field(default_factory=set)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Calls the server's REST API and returns the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _write_settings(settings: Path) -> None:
    # Answer the "get notified about official Jupyter news?" question up front.
    target = settings / "@jupyterlab" / "apputils-extension"
    target.mkdir(parents=True, exist_ok=True)
    (target / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


def _stop_server(server: LabServer) -> None:
    process = server.process
    pids = _children(process.pid)
    try:  # shut kernels down politely first: the server then reaps them
        for kernel in server.api("GET", "/api/kernels") or []:
            server.api("DELETE", f"/api/kernels/{kernel['id']}")
        server.api("POST", "/api/shutdown")
    except (OSError, urllib.error.URLError, ValueError):
        pass
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # Kernels live in their own process groups; kill any the server left behind.
    leftovers = _wait_exit(pids, 5)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_exit(leftovers, 5)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server for the whole session; its kernels die with it."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    settings = base / "settings"
    _write_settings(settings)
    port = _free_port()
    token = secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="3",
        TF_ENABLE_ONEDNN_OPTS="0",
        # The kernel imports this working tree's kernelkit.
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
    )
    log = base / "server.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = LabServer(f"http://127.0.0.1:{port}", token, root, process, log)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited with {process.returncode}:\n{server.log_tail()}")
            try:
                server.api("GET", "/api/status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"jupyter lab did not answer in {TIMEOUT_S} s:\n{server.log_tail()}"
                    )
                time.sleep(0.2)  # poll interval while the server starts
        page = urllib.request.urlopen(f"{server.url}/lab?token={token}", timeout=30).read()
        if b'"name": "kernelkit"' not in page and b'"name":"kernelkit"' not in page:
            pytest.fail(
                "JupyterLab does not list the kernelkit extension: run `pip install -e .` "
                "(it builds labextension/ with jlpm) or `jupyter labextension develop . "
                "--overwrite`."
            )
        yield server
    finally:
        _stop_server(server)


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless system Chromium, one per session."""
    # `make test` installed both, so there a missing one is a failure, never a quiet skip.
    required = os.environ.get("KERNELKIT_REQUIRE_BROWSER") == "1"
    missing = None
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        missing = "no playwright (pip install playwright; its own browser download is not needed)"
    if missing is None and not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing is not None:
        if required:
            pytest.fail(f"{missing}: make test installs it, so the browser tests must run")
        pytest.skip(missing)
    # expect() polls for 5 s by default; JupyterLab on a busy machine needs more.
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keeps each phase's report on the item so fixtures can see a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")


@pytest.fixture
def page(browser: Any, lab_server: LabServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser page (own context: no cookies or storage from other tests)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda err: console.append(f"[pageerror] {err}"))
    page.kk_console = console  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        failed = any(
            getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
            for when in ("setup", "call")
        )
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            name = _artifact_name(request.node.nodeid)
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            except Exception as err:  # best effort on a broken page
                console.append(f"[harness] screenshot failed: {err}")
            (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
            (ARTIFACTS / f"{name}.server.log").write_text(lab_server.log_tail(200))
        context.close()


# ------------------------------------------------------------------ helpers


class Lab:
    """Drives JupyterLab in one page; selectors stay inside the visible notebook."""

    def __init__(self, page: Any, server: LabServer) -> None:
        self.page = page
        self.server = server
        self.path = ""

    # notebooks

    def new_notebook(self, name: str, cells: list[str] | None = None) -> Any:
        """Writes ``name`` (Python 3 kernel) and opens it with a reset workspace."""
        notebook = {
            "cells": [
                {
                    "cell_type": "code",
                    "metadata": {},
                    "source": source,
                    "outputs": [],
                    "execution_count": None,
                }
                for source in (cells or [""])
            ],
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        self.server.api(
            "PUT",
            f"/api/contents/{name}",
            {"type": "notebook", "format": "json", "content": notebook},
        )
        return self.open_notebook(name)

    def open_notebook(self, name: str) -> Any:
        """Opens ``/lab/tree/<name>?reset`` and waits for an idle kernel."""
        self.path = name
        self.page.goto(f"{self.server.url}/lab/tree/{name}?reset&token={self.server.token}")
        panel = self.notebook
        panel.wait_for(state="visible")
        self.dismiss_news()
        self.wait_idle()
        return panel

    @property
    def notebook(self) -> Any:
        return self.page.locator(NOTEBOOK)

    def cell(self, index: int) -> Any:
        return self.notebook.locator(".jp-Cell").nth(index)

    # kernel

    def kernel_status(self) -> str:
        indicator = self.notebook.locator(".jp-Notebook-ExecutionIndicator")
        return indicator.get_attribute("data-status") or ""

    def wait_idle(self, timeout_s: float = TIMEOUT_S) -> None:
        """Waits until the notebook's kernel runs, this page is connected, and all is idle.

        The toolbar says "idle" even before a kernel exists, so the server is
        asked too: the session must have a kernel that is idle with a
        websocket connection.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            kernel = self._session_kernel()
            if kernel and kernel.get("execution_state") == "idle" and kernel.get("connections"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"kernel for {self.path!r} not idle: {kernel}")
            time.sleep(0.2)  # poll interval of the REST check
        self.notebook.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
            state="attached", timeout=timeout_s * 1000
        )

    def _session_kernel(self) -> dict[str, Any] | None:
        for session in self.server.api("GET", "/api/sessions"):
            if session["path"] == self.path and session.get("kernel"):
                return dict(session["kernel"])
        return None

    def kernel_id(self) -> str:
        """The id of the kernel behind the notebook opened last."""
        kernel = self._session_kernel()
        assert kernel, f"no kernel for {self.path!r}"
        return str(kernel["id"])

    def restart_kernel(self) -> None:
        """Restarts the kernel as a user does: toolbar button, then "Restart" in the dialog."""
        self.notebook.locator('[data-jp-item-name="restart"] button').click()
        self.page.locator(".jp-Dialog button.jp-mod-accept").click()
        self.page.locator(".jp-Dialog").wait_for(state="detached")

    # cells

    def set_cell(self, index: int, code: str) -> Any:
        """Replaces cell ``index``'s text (as typed into its editor)."""
        cell = self.cell(index)
        editor = cell.locator(".cm-content")
        editor.click()
        self.page.keyboard.press("ControlOrMeta+a")
        self.page.keyboard.press("Delete")
        # insert_text: no auto-indent or bracket closing on the way in.
        self.page.keyboard.insert_text(code)
        return cell

    def _prompt(self, cell: Any) -> str:
        return str(cell.locator(".jp-InputArea-prompt").inner_text()).strip()

    def start_cell(self, index: int, code: str) -> Any:
        """Types ``code`` into cell ``index`` and runs it without waiting for the end.

        Returns the cell's locator; pass it to ``wait_cell_done``.
        """
        cell = self.set_cell(index, code)
        cell.kk_prompt = self._prompt(cell)  # e.g. "[ ]:" or "[3]:"
        self.page.keyboard.press("Control+Enter")
        return cell

    def run_cell(self, index: int, code: str, timeout_s: float = TIMEOUT_S) -> str:
        """Runs ``code`` in cell ``index``, waits for it to finish, returns its output text."""
        cell = self.start_cell(index, code)
        self.wait_cell_done(cell, timeout_s)
        return self.output_text(cell)

    def wait_cell_done(self, cell: Any, timeout_s: float = TIMEOUT_S) -> None:
        """Waits for a new execution count on the cell, then for an idle kernel."""
        before = re.escape(getattr(cell, "kk_prompt", "[ ]:"))
        done = re.compile(rf"^(?!{before}$)\[\d+\]:?$")
        cell.locator(".jp-InputArea-prompt", has_text=done).wait_for(timeout=timeout_s * 1000)
        self.wait_idle()

    def output_text(self, cell: Any) -> str:
        return str(cell.locator(".jp-Cell-outputArea").inner_text())

    def wait_output(
        self, cell: Any, text: str | re.Pattern[str], timeout_s: float = TIMEOUT_S
    ) -> None:
        """Waits until the cell's output contains ``text``."""
        cell.locator(".jp-Cell-outputArea", has_text=text).wait_for(timeout=timeout_s * 1000)

    # chrome

    def dismiss_news(self) -> None:
        """Closes the "official Jupyter news" toast if it shows (the settings pre-answer it)."""
        toast = self.page.locator(".Toastify__toast", has_text="news")
        if toast.count():
            toast.get_by_role("button", name="No").click()

    @property
    def status_item(self) -> Any:
        return self.page.locator(STATUS_ITEM)

    def run_command_from_palette(self, label: str) -> None:
        """Opens the command palette, searches ``label`` and runs the first match."""
        self.page.keyboard.press("Control+Shift+c")
        search = self.page.locator(".jp-ModalCommandPalette input, #modal-command-palette input")
        search.first.wait_for(state="visible")
        search.first.fill(label)
        item = self.page.locator(
            ".jp-ModalCommandPalette .lm-CommandPalette-item:not(.lm-mod-disabled)",
            has_text=label,
        ).first
        item.wait_for(state="visible")
        item.click()


@pytest.fixture
def lab(page: Any, lab_server: LabServer) -> Lab:
    """Helpers bound to this test's page."""
    return Lab(page, lab_server)


@pytest.fixture(autouse=True)
def _kernels_shut_down(lab_server: LabServer) -> Iterator[None]:
    """Each test starts and ends with no running kernel (no state leaks between tests)."""
    yield
    for session in lab_server.api("GET", "/api/sessions") or []:
        with contextlib.suppress(urllib.error.HTTPError):  # gone already
            # Deleting a session shuts its kernel down.
            lab_server.api("DELETE", f"/api/sessions/{session['id']}")
    for kernel in lab_server.api("GET", "/api/kernels") or []:
        with contextlib.suppress(urllib.error.HTTPError):
            lab_server.api("DELETE", f"/api/kernels/{kernel['id']}")


@pytest.fixture(scope="session", autouse=True)
def _fresh_artifacts() -> None:
    """Removes screenshots left by an earlier run of these tests."""
    for path in ARTIFACTS.glob("tests_browser_*"):
        if path.is_file():
            path.unlink()
