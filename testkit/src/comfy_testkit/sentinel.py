"""A Redis primary, its replica and three sentinels on loopback, each a process, for the
failover tests: a test kills the primary and the sentinels promote the replica.

The sentinels judge a primary down after ``down_after_ms`` without an answer (Redis' default
is 30 s; here one second, so a failover takes a few seconds). Both servers keep an
append-only file synced before every reply, as the chaos tests' Redis does.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import redis as redis_sync
import redis.sentinel as sentinel_sync

from comfy_shared.redis_client import Address, RedisTarget
from comfy_stack.embedded_redis import RedisServer, redis_server_binary, start_redis_server
from comfy_stack.ports import free_port
from comfy_stack.processes import ManagedProcess, start_process
from comfy_stack.waiting import wait_for_condition_sync

MASTER_NAME = "comfy"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class SentinelGroup:
    """``primary`` and ``replica`` swap roles at a failover; ask :meth:`primary_address`."""

    def __init__(self, data_dir: Path, *, down_after_ms: int = DOWN_AFTER_MS) -> None:
        self._dir = data_dir
        self._folders = {"primary": _folder(data_dir / "primary")}
        self.primary = start_redis_server(self._folders["primary"], persistent=True)
        self._folders["replica"] = _folder(data_dir / "replica")
        self.replica = start_redis_server(
            self._folders["replica"],
            persistent=True,
            extra_args=["--replicaof", self.primary.host, str(self.primary.port)],
        )
        self.sentinels: list[tuple[Address, ManagedProcess]] = []
        for index in range(SENTINELS):
            self.sentinels.append(self._start_sentinel(index, down_after_ms))

    @property
    def addresses(self) -> tuple[Address, ...]:
        return tuple(address for address, _ in self.sentinels)

    def target(self, url: str = "redis://127.0.0.1/0") -> RedisTarget:
        """What a process is given: the sentinels and the name they monitor."""
        return RedisTarget(url, sentinels=self.addresses, sentinel_master=MASTER_NAME)

    @property
    def sentinels_arg(self) -> str:
        """``--redis-sentinels``' value."""
        return ",".join(f"{host}:{port}" for host, port in self.addresses)

    def primary_address(self) -> Address:
        """The primary a client is sent to now, found as redis-py finds it: named by a
        sentinel that holds it as a master neither subjectively nor objectively down. (A
        sentinel names the promoted replica a moment before it holds it up: asking only for
        the name said "promoted" while clients still found no primary.)"""
        manager = sentinel_sync.Sentinel(  # type: ignore[no-untyped-call]
            self.addresses, sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1}
        )
        try:
            host, port = manager.discover_master(MASTER_NAME)  # type: ignore[no-untyped-call]
        except sentinel_sync.MasterNotFoundError as exc:
            raise ConnectionError(f"no primary named: {exc}") from exc
        finally:
            for sentinel in manager.sentinels:
                sentinel.close()
        return str(host), int(port)

    def wait_until_replicated(self, timeout_s: float = 15.0) -> None:
        """Every sentinel knows the replica as up and in sync, so a failover can pick it."""

        def replica_ready(host: str, port: int) -> bool:
            with contextlib.suppress(redis_sync.RedisError), _client(host, port) as sentinel:
                replicas = sentinel.sentinel_slaves(MASTER_NAME)
                return any(
                    not r["is_sdown"] and r.get("master-link-status") == "ok" for r in replicas
                )
            return False

        wait_for_condition_sync(
            lambda: all(replica_ready(*address) for address in self.addresses),
            timeout_s=timeout_s,
            interval_s=0.1,
            what="the replica known to every sentinel",
        )

    def bring_back_the_old_primary(self) -> None:
        """After a failover: start the killed primary again on its port and folder, as a
        replica of the primary the sentinels name (what a deployment's start script does),
        and return once it is in sync. ``primary`` and ``replica`` swap."""
        host, port = self.primary_address()
        old_folder = self._folders["primary"]
        restarted = start_redis_server(
            old_folder,
            port=self.primary.port,
            persistent=True,
            extra_args=["--replicaof", host, str(port)],
        )
        self.primary, self.replica = self.replica, restarted
        self._folders = {"primary": self._folders["replica"], "replica": old_folder}
        wait_for_condition_sync(
            lambda: _replica_online(self.primary), timeout_s=30, interval_s=0.05, what="in sync"
        )

    def stop(self) -> None:
        for _, process in reversed(self.sentinels):
            process.stop()
        for server in (self.replica, self.primary):
            server.stop()

    def _start_sentinel(self, index: int, down_after_ms: int) -> tuple[Address, ManagedProcess]:
        folder = _folder(self._dir / f"sentinel-{index}")
        port = free_port()
        config = folder / "sentinel.conf"  # a sentinel rewrites its file: one of its own
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {folder}\n"
            f"sentinel monitor {MASTER_NAME} {self.primary.host} {self.primary.port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        process = start_process(
            f"sentinel-{port}", [redis_server_binary(), str(config), "--sentinel"], log_dir=folder
        )
        address = ("127.0.0.1", port)
        wait_for_condition_sync(
            lambda: _pings(address), timeout_s=10, interval_s=0.05, what="sentinel answering"
        )
        return address, process


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _client(host: str, port: int) -> redis_sync.Redis:
    return redis_sync.Redis(host, port, socket_timeout=1, decode_responses=True)


def _pings(address: Address) -> bool:
    with contextlib.suppress(redis_sync.RedisError), _client(*address) as client:
        return bool(client.ping())
    return False


def _replica_online(server: RedisServer) -> bool:
    with contextlib.suppress(redis_sync.RedisError), _client(server.host, server.port) as client:
        replica = client.info("replication").get("slave0")
        return isinstance(replica, dict) and replica.get("state") == "online"
    return False
