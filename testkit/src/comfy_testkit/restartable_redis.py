"""A Redis server a test can kill and start again, for the fault-tolerance tests.

Its append-only file is synced before every reply, so started again on the same port and
folder it comes back with every write it acknowledged, even after a SIGKILL. A test module
that uses it overrides the ``redis_url`` fixture with its URL, so every process the test
starts talks to it instead of the session's shared server.
"""

from __future__ import annotations

import signal
from pathlib import Path

from comfy_stack.embedded_redis import RedisServer, start_redis_server


class RestartableRedis:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._dir = data_dir
        self._server = self._start(port=None)
        self.port = self._server.port
        self.url = self._server.url

    def crash(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGTERM: a clean shutdown, SIGKILL: a crash) and wait until it exited."""
        process = self._server.process
        process.send_signal(sig)
        process.process.wait(timeout=10)

    def start_again(self) -> None:
        """Same port, same folder; returns once it answers PING (its data loaded)."""
        self._server = self._start(port=self.port)

    def stop(self) -> None:
        self._server.stop()

    def _start(self, port: int | None) -> RedisServer:
        return start_redis_server(self._dir, port=port, persistent=True)
