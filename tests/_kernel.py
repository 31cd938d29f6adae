"""A real kernel (jupyter_client) with helpers that wait for states, never sleep.

Its own module, not conftest.py: tests/ and tests/browser/ each have a conftest, so
``from conftest import ...`` reads whichever one pytest loaded first.
"""

from __future__ import annotations

import queue
import time
from typing import Any


class Kernel:
    """A real kernel (jupyter_client) with helpers that wait for states, never sleep."""

    def __init__(self, km: Any, kc: Any) -> None:
        self.km = km
        self.kc = kc

    def execute(self, code: str, timeout: float = 120.0) -> tuple[dict[str, Any], list[dict]]:
        """Runs ``code``; returns (the execute reply's content, iopub messages of the cell)."""
        msg_id = self.kc.execute(code)
        return self.collect(msg_id, timeout)

    def collect(self, msg_id: str, timeout: float = 120.0) -> tuple[dict[str, Any], list[dict]]:
        """Gathers iopub messages of ``msg_id`` until the kernel is idle again."""
        deadline = time.monotonic() + timeout
        messages: list[dict] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"kernel did not finish within {timeout} s")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 1))
        return reply["content"], messages

    def wait_for(
        self, msg_id: str, predicate: Any, timeout: float = 120.0
    ) -> list[dict]:
        """Reads iopub until a message of the cell satisfies ``predicate``; returns what it read."""
        deadline = time.monotonic() + timeout
        seen: list[dict] = []
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append(msg)
            if predicate(msg):
                return seen
        raise TimeoutError("the awaited message never came")

    @staticmethod
    def text(messages: list[dict]) -> str:
        """Everything the cell showed as text: streams, text/plain and errors."""
        parts = []
        for m in messages:
            c = m["content"]
            if m["msg_type"] == "stream":
                parts.append(c["text"])
            elif m["msg_type"] in ("display_data", "execute_result", "update_display_data"):
                parts.append(c["data"].get("text/plain", ""))
            elif m["msg_type"] == "error":
                parts.append(f"{c['ename']}: {c['evalue']}")
        return "\n".join(parts)
