"""A one-line live view of a task on a terminal: queue position while it waits, then the
running node and a bar of its steps."""

from __future__ import annotations

import sys
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


def describe(task: dict[str, Any]) -> str:
    status = task["status"]
    if status == "queued":
        position = task.get("queue_position")
        ahead = f", {position} ahead" if position else ""
        return f"{task['id']} queued{ahead}"
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
