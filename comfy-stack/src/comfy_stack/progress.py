"""A one-line live view of a task on a terminal: queue position and expected start while it
waits, then the running node and a bar of its steps."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_BAR_WIDTH = 30


class ProgressLine:
    def __init__(self, out: TextIO = sys.stderr) -> None:
        self._out = out
        self._last = ""

    def update(self, task: dict[str, Any]) -> None:
        text = describe(task)
        if text != self._last:
            self._out.write("\r\033[K" + text if self._out.isatty() else text + "\n")
            self._out.flush()
            self._last = text

    def finish(self) -> None:
        if self._out.isatty() and self._last:
            self._out.write("\n")


def describe(task: dict[str, Any], now: datetime | None = None) -> str:
    """The line for ``task`` (``now``: when it is read, for its expected start)."""
    status = task["status"]
    if status == "queued":
        position = task.get("queue_position")
        ahead = f", {position} ahead" if position else ""
        return f"{task['id']} queued{ahead}{_expected_start(task.get('eta'), now)}"
    if status == "dispatched":
        return f"{task['id']} on {task.get('node_id')}, waiting for ComfyUI"
    progress = task.get("progress") or {}
    if status == "running" and progress.get("max"):
        done = round(_BAR_WIDTH * progress["percent"] / 100)
        bar = "#" * done + "." * (_BAR_WIDTH - done)
        return (
            f"{task['id']} running on {task.get('node_id')} node {progress.get('node')} "
            f"[{bar}] {progress['value']}/{progress['max']}"
        )
    if status == "running":
        return f"{task['id']} running on {task.get('node_id')} node {progress.get('node') or '-'}"
    return f"{task['id']} {status}"


def _expected_start(eta: dict[str, str] | None, now: datetime | None = None) -> str:
    if not eta:
        return ""
    wait_s = (datetime.fromisoformat(eta["start"]) - (now or datetime.now(UTC))).total_seconds()
    return f", starts in about {_duration(wait_s)}" if wait_s >= 1 else ", starts any moment"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
