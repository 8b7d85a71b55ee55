"""A TCP server that collects newline-delimited lines, like logdy's socket input."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class LineListener:
    """Accepts any number of connections on 127.0.0.1 and keeps every line received.
    With ``read=False`` it accepts but never reads: a stalled log viewer."""

    def __init__(self, port: int = 0, *, read: bool = True) -> None:
        self._server = socket.create_server(("127.0.0.1", port))
        self.port: int = self._server.getsockname()[1]
        self._read = read
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def lines(self) -> list[bytes]:
        with self._lock:
            return list(self._lines)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._server.close()
        self._thread.join(timeout=5)  # no accept can add a connection after this
        with self._lock:
            for connection in self._connections:
                connection.close()

    def __enter__(self) -> LineListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._connections.append(connection)
            if self._read:
                threading.Thread(target=self._receive, args=(connection,), daemon=True).start()

    def _receive(self, connection: socket.socket) -> None:
        pending = b""
        while chunk := _recv(connection):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            with self._lock:
                self._lines.extend(complete)


def _recv(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except OSError:
        return b""
