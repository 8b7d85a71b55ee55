"""The log ring buffer behind /internal/logs and the WebSocket `logs` messages.

ComfyUI replaces stdout/stderr with interceptors: every `write()` becomes an entry
`{"t": <local ISO time>, "m": <chunk>}` in a 300-entry deque, and every flush hands the new entries
to the terminal service, which pushes them to subscribed sockets. A logging call is one write
plus one flush, so each log line reaches subscribers as its own `logs` message; `write()` here
does both at once. A chunk starting with "\\r" replaces the previous entry when that one did not
end with a newline (tqdm progress bars).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TextIO, TypedDict

LOG_CAPACITY = 300


class LogEntry(TypedDict):
    t: str
    m: str


Listener = Callable[[list[LogEntry]], None]


class LogBuffer:
    """A bounded list of output chunks with flush listeners."""

    def __init__(self, capacity: int = LOG_CAPACITY, echo: TextIO | None = None) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._listeners: list[Listener] = []
        self._echo = echo

    def write(self, chunk: str) -> None:
        """Record one output chunk and notify listeners, like a write followed by a flush."""
        entry: LogEntry = {"t": datetime.now().isoformat(), "m": chunk}
        if chunk.startswith("\r") and self._entries and not self._entries[-1]["m"].endswith("\n"):
            self._entries.pop()
        self._entries.append(entry)
        if self._echo is not None:
            self._echo.write(chunk)
            self._echo.flush()
        for listener in list(self._listeners):
            listener([entry])

    def log(self, line: str) -> None:
        """Write one line the way Python logging's StreamHandler does (message + newline)."""
        self.write(line + "\n")

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def entries(self) -> list[LogEntry]:
        return list(self._entries)

    def joined(self) -> str:
        """The GET /internal/logs body: every entry as "<t> - <m>", concatenated."""
        return "".join(f"{e['t']} - {e['m']}" for e in self._entries)

    def clear(self) -> None:
        self._entries.clear()


def stdout_echo(enabled: bool) -> TextIO | None:
    """The stream to echo log lines to, if any."""
    return sys.stdout if enabled else None
