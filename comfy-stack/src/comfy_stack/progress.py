"""A one-line live view of a task: queue position and expected start while it waits, then the
running node and a bar of its steps.

On a terminal the line is redrawn in place (rich) and always fits the terminal's current
width: the details that do not fit are dropped, the bar shrinks, a long task id is shortened.
Elsewhere (a pipe, a log file) plain lines are written: one per change of state or node, and
one per quarter of the steps, never a line per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

_MIN_BAR = 8
_MAX_BAR = 40
_SHORT_ID = 8


class ProgressLine:
    """Shows a task's progress on ``console`` (default: stderr) while it is followed."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._live: Live | None = None
        self._last_plain = ""
        self._last_mark: tuple[Any, ...] = ()

    def update(self, task: dict[str, Any]) -> None:
        if self._console.is_terminal:
            self._draw(task)
        else:
            self._write_plain(task)

    def finish(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _draw(self, task: dict[str, Any]) -> None:
        line = Text(fit(task, self._console.width), no_wrap=True, overflow="ellipsis")
        if self._live is None:
            self._live = Live(line, console=self._console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(line, refresh=True)

    def _write_plain(self, task: dict[str, Any]) -> None:
        mark = _plain_mark(task)
        if mark != self._last_mark:
            self._last_mark = mark
            self._console.file.write(describe(task) + "\n")
            self._console.file.flush()


def _plain_mark(task: dict[str, Any]) -> tuple[Any, ...]:
    """What must change for a new plain line: state, node, queue position, or a quarter."""
    progress = task.get("progress") or {}
    quarter = int(progress.get("percent") or 0) // 25 if progress.get("max") else None
    return (task["status"], task.get("node_id"), task.get("queue_position"), quarter)


def describe(task: dict[str, Any], now: datetime | None = None) -> str:
    """The whole line for ``task`` (``now``: when it is read, for its expected start)."""
    return next((line for line in _layouts(task, task["id"], now) if line), task["id"])


def fit(task: dict[str, Any], width: int, now: datetime | None = None) -> str:
    """The most detailed line for ``task`` that fits in ``width`` columns."""
    task_id = str(task["id"])
    short_id = task_id if len(task_id) <= _SHORT_ID else task_id[:_SHORT_ID] + "…"
    # Each layout with the whole id, then with a short one, before a less detailed layout.
    pairs = zip(
        _layouts(task, task_id, now, width), _layouts(task, short_id, now, width), strict=True
    )
    for line in (line for pair in pairs for line in pair):
        if line is not None and len(line) <= width:
            return line
    compact = _compact(task)
    return compact if len(compact) <= width else compact[: max(width - 1, 0)] + "…"


def _layouts(
    task: dict[str, Any], task_id: str, now: datetime | None, width: int | None = None
) -> Iterator[str | None]:
    """Lines for ``task``, the most detailed first; with a ``width``, bars fill it (None: a
    layout with a bar that has no room, kept so the same layouts line up for any id)."""
    status = task["status"]
    if status == "queued":
        position = task.get("queue_position")
        ahead = f", {position} ahead" if position else ""
        yield f"{task_id} queued{ahead}{_expected_start(task.get('eta'), now)}"
        yield f"{task_id} queued{ahead}"
    elif status == "dispatched":
        yield f"{task_id} on {task.get('node_id')}, waiting for ComfyUI"
        yield f"{task_id} on {task.get('node_id')}"
    elif status == "running":
        yield from _running(task, task_id, width)
    else:
        yield f"{task_id} {status}"


def _running(task: dict[str, Any], task_id: str, width: int | None) -> Iterator[str | None]:
    progress = task.get("progress") or {}
    where = f"{task_id} running on {task.get('node_id')}"
    if not progress.get("max"):
        yield f"{where} node {progress.get('node') or '-'}"
        yield where
        return
    steps = f"{progress['value']}/{progress['max']}"
    share = float(progress.get("percent") or 0) / 100
    prefixes = (f"{where} node {progress.get('node')}", where, task_id)
    yield from (_with_bar(prefix, steps, share, width) for prefix in prefixes)
    yield from (f"{prefix} {steps}" for prefix in prefixes)


def _with_bar(prefix: str, suffix: str, share: float, width: int | None) -> str | None:
    """``prefix [####....] suffix``, the bar taking the room ``width`` leaves (30 without
    one); None when that room is too small for a bar."""
    size = 30 if width is None else min(width - len(prefix) - len(suffix) - 4, _MAX_BAR)
    if size < _MIN_BAR:
        return None
    done = round(size * min(max(share, 0.0), 1.0))
    return f"{prefix} [{'#' * done}{'.' * (size - done)}] {suffix}"


def _compact(task: dict[str, Any]) -> str:
    """The shortest line: the state, and the steps while it runs."""
    progress = task.get("progress") or {}
    if task["status"] == "running" and progress.get("max"):
        return f"{progress['value']}/{progress['max']}"
    return str(task["status"])


def _expected_start(eta: dict[str, str] | None, now: datetime | None = None) -> str:
    if not eta:
        return ""
    wait_s = (datetime.fromisoformat(eta["start"]) - (now or datetime.now(UTC))).total_seconds()
    return f", starts in about {duration_text(wait_s)}" if wait_s >= 1 else ", starts any moment"


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
