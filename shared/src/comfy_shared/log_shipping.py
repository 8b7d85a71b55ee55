"""Ship log records to logdy's socket input as JSON lines, without ever hurting the process.

logdy reads newline-delimited UTF-8 over plain TCP and never answers. Three of its behaviours
shape this module: a line of 64 KiB or more makes it close the connection silently (so lines
are capped well below that); it applies back-pressure instead of dropping (so a stalled logdy
would block a naive sender); and it has no acknowledgement (so a line written just as logdy
restarts can be lost, which is accepted).

Design: the loguru sink only serialises the record and appends it to a bounded in-memory
buffer (the oldest line is dropped when it is full). One daemon thread owns the socket: it
connects lazily with a timeout, sends with a timeout, backs off exponentially while logdy is
away, and after a reconnect first reports how many lines were dropped. The sink never raises
and never logs (loguru sinks are not re-entrant); trouble goes to stderr at most once per
outage.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from loguru import Message, Record

MAX_LINE_BYTES: Final = 16 * 1024
"""Encoded line cap: a quarter of logdy's 64 KiB limit leaves room for any extra fields."""
TRUNCATION_MARKER: Final = " …[truncated]"


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    host: str
    port: int
    buffer_lines: int = 10_000
    connect_timeout_s: float = 1.0
    send_timeout_s: float = 1.0
    min_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    @classmethod
    def parse(cls, address: str, **options: Any) -> ShipperConfig:
        """``HOST:PORT`` as given with ``--logdy``."""
        host, _, port = address.rpartition(":")
        return cls(host=host, port=int(port), **options)


class LogdyShipper:
    """A loguru sink: ``logger.add(shipper.write, format="{message}")``; call :meth:`close`."""

    def __init__(self, config: ShipperConfig, to_dict: Callable[[Record], dict[str, Any]]) -> None:
        self._config = config
        self._to_dict = to_dict
        self._buffer: deque[bytes] = deque(maxlen=config.buffer_lines)
        self._ready = threading.Condition()
        self._dropped = 0
        self._closed = False
        self._outage_reported = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="logdy-shipper", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def write(self, message: Message) -> None:
        """Called by loguru for every record: cheap, never blocks on the network, never raises."""
        try:
            line = encode_line(self._to_dict(message.record))
        except Exception:
            return
        with self._ready:
            if len(self._buffer) == self._buffer.maxlen:
                self._dropped += 1  # deque(maxlen) drops the oldest line for us
            self._buffer.append(line)
            self._ready.notify()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop after sending what is buffered (at most ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while self._buffer and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 0.1)

    def _run(self) -> None:
        connection: socket.socket | None = None
        backoff_s = self._config.min_backoff_s
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            if connection is None:
                connection = self._connect()
                if connection is None:
                    self._put_back(batch)
                    self._sleep_unless_closed(backoff_s)
                    backoff_s = min(self._config.max_backoff_s, backoff_s * 2)
                    continue
                backoff_s = self._config.min_backoff_s
                batch = self._with_drop_notice(batch)
            try:
                connection.sendall(b"".join(batch))
            except OSError:
                connection.close()
                connection = None
                self._put_back(batch)
        if connection is not None:
            connection.close()

    def _next_batch(self) -> list[bytes] | None:
        with self._ready:
            while not self._buffer and not self._closed:
                self._ready.wait()
            if self._closed and not self._buffer:
                return None
            batch = list(self._buffer)
            self._buffer.clear()
            return batch

    def _put_back(self, batch: list[bytes]) -> None:
        """Keep unsent lines for the next try, newest lines win when the buffer overflows."""
        with self._ready:
            newer = list(self._buffer)
            self._buffer.clear()
            room = self._buffer.maxlen or len(batch)
            kept = (batch + newer)[-room:]
            self._dropped += len(batch) + len(newer) - len(kept)
            self._buffer.extend(kept)

    def _with_drop_notice(self, batch: list[bytes]) -> list[bytes]:
        with self._ready:
            dropped, self._dropped = self._dropped, 0
        if not dropped:
            return batch
        notice = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "WARNING",
            "logger": __name__,
            "message": f"log shipping dropped {dropped} lines while logdy was unreachable or slow",
            "dropped": dropped,
        }
        return [encode_line(notice), *batch]

    def _connect(self) -> socket.socket | None:
        if os.getpid() != self._pid:
            return None  # a forked child must not share the parent's socket
        address = (self._config.host, self._config.port)
        try:
            connection = socket.create_connection(address, timeout=self._config.connect_timeout_s)
        except OSError as exc:
            if not self._outage_reported:  # visible, but once per outage, and not via logging
                sys.stderr.write(
                    f"log shipping: logdy at {self._config.host}:{self._config.port} unreachable "
                    f"({exc}); keeping up to {self._config.buffer_lines} lines meanwhile\n"
                )
                self._outage_reported = True
            return None
        self._outage_reported = False
        connection.settimeout(self._config.send_timeout_s)
        return connection

    def _sleep_unless_closed(self, seconds: float) -> None:
        with self._ready:
            if not self._closed:
                self._ready.wait(timeout=seconds)


def encode_line(record: dict[str, Any]) -> bytes:
    """One JSON object and one newline, under :data:`MAX_LINE_BYTES` (long texts truncated)."""
    line = json.dumps(record, ensure_ascii=False, default=str).encode()
    if len(line) < MAX_LINE_BYTES:
        return line + b"\n"
    trimmed = dict(record)
    for key, share in (("message", 4), ("exception", 2)):
        if isinstance(trimmed.get(key), str):
            trimmed[key] = _truncate(trimmed[key], MAX_LINE_BYTES // share)
    line = json.dumps(trimmed, ensure_ascii=False, default=str).encode()
    if len(line) >= MAX_LINE_BYTES:  # the extra fields are what is too big: keep the core
        core = ("time", "level", "service", "node", "task_id", "logger", "message")
        kept = {key: trimmed.get(key) for key in core}
        line = json.dumps(kept, ensure_ascii=False, default=str).encode()
    return line + b"\n"


def _truncate(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode(errors="ignore") + TRUNCATION_MARKER
