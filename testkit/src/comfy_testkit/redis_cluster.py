"""A real Redis Cluster for tests: three primaries of the embedded ``redis-server``.

Each primary runs with ``--cluster-enabled yes`` on a free port (its cluster bus port,
port + 10000, free too), in a folder of its own (its
``nodes.conf``); the 16384 slots are split in three ranges (``CLUSTER ADDSLOTS``), the nodes
meet (``CLUSTER MEET``), and the cluster is ready once every node reports ``cluster_state:ok``
and knows all three. Processes reach it through :attr:`RedisCluster.url`, a
``redis+cluster://`` URL naming the first node as seed (``comfy_shared.redis_client``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis as redis_sync

from comfy_stack.embedded_redis import RedisServer, start_redis_server
from comfy_stack.ports import free_port
from comfy_stack.waiting import wait_for_condition_sync

SLOTS: Final = 16384
NODE_TIMEOUT_MS: Final = 2000
"""How long a node may be unreachable before the others count it as failing."""
BUS_OFFSET: Final = 10000
"""A node's cluster bus listens on its port + this (fixed in Redis 6)."""
BUS_PORTS_END: Final = 32768
"""Bus ports stay below Linux's ephemeral range, which outgoing connections draw from."""


@dataclass
class RedisClusterServers:
    servers: list[RedisServer]

    @property
    def url(self) -> str:
        seed = self.servers[0]
        return f"redis+cluster://{seed.host}:{seed.port}/0"

    def clients(self) -> list[redis_sync.Redis]:
        """A plain client per primary (close them); for checks of where keys are."""
        return [
            redis_sync.Redis(host=s.host, port=s.port, decode_responses=True) for s in self.servers
        ]

    def flush(self) -> None:
        """Empty every primary (FLUSHALL is per node on a cluster)."""
        for client in self.clients():
            with client:
                client.flushall()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_redis_cluster(data_dir: Path, *, primaries: int = 3) -> RedisClusterServers:
    """Start ``primaries`` cluster-enabled servers and join them into one cluster (each
    serves an equal range of slots); returns once every node sees the cluster as ``ok``."""
    servers: list[RedisServer] = []
    cluster = RedisClusterServers(servers)
    try:
        for index in range(primaries):
            folder = data_dir / f"node-{index}"
            folder.mkdir(parents=True, exist_ok=True)
            port = _port_with_free_bus()
            servers.append(start_redis_server(folder, port=port, extra_args=_CLUSTER_ARGS))
        _join(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


_CLUSTER_ARGS: Final = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
)  # fmt: skip


def _port_with_free_bus() -> int:
    """A free port whose bus port is free too and below the ephemeral range."""
    for _ in range(1000):
        port = free_port()
        bus = port + BUS_OFFSET
        if bus < BUS_PORTS_END and _bindable(bus):
            return port
    raise RuntimeError("no free port with a free cluster bus port")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _join(cluster: RedisClusterServers) -> None:
    clients = cluster.clients()
    try:
        count = len(clients)
        for index, client in enumerate(clients):
            first, last = SLOTS * index // count, SLOTS * (index + 1) // count - 1
            client.cluster("ADDSLOTS", *range(first, last + 1))
        seed = cluster.servers[0]
        for client in clients[1:]:
            client.cluster("MEET", seed.host, seed.port)
        wait_for_condition_sync(
            lambda: all(_sees_whole_cluster(client, count) for client in clients),
            timeout_s=20,
            interval_s=0.05,
            what="redis cluster ok on every node",
        )
    finally:
        for client in clients:
            client.close()


def _sees_whole_cluster(client: redis_sync.Redis, primaries: int) -> bool:
    info = client.cluster("INFO")
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == primaries)
