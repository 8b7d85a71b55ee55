"""A real Redis Cluster for tests: three primaries of the embedded ``redis-server``.

Each primary runs with ``--cluster-enabled yes`` on a free port (its cluster bus port,
port + 10000, free too), in a folder of its own (its
``nodes.conf``); the 16384 slots are split in three ranges (``CLUSTER ADDSLOTS``), the nodes
meet (``CLUSTER MEET``), and the cluster is ready once every node reports ``cluster_state:ok``
and knows all three. ``replicas=True`` gives each primary a replica (``CLUSTER REPLICATE``),
for failover tests. Processes reach it through :attr:`RedisCluster.url`, a
``redis+cluster://`` URL naming the first node as seed (``comfy_shared.redis_client``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis as redis_sync
from redis.crc import key_slot

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
    """The primaries, as started: ``servers[i]`` serves the ``i``-th range of slots."""
    replicas: list[RedisServer] = field(default_factory=list)
    """``replicas[i]`` follows ``servers[i]`` (none unless asked for)."""

    @property
    def url(self) -> str:
        seed = self.servers[0]
        return f"redis+cluster://{seed.host}:{seed.port}/0"

    def clients(self) -> list[redis_sync.Redis]:
        """A plain client per primary (close them); for checks of where keys are."""
        return [_client(server) for server in self.servers]

    def serving(self, key: str) -> int:
        """Index of the primary (and its replica) that was given the slot of ``key``."""
        slot = key_slot(key.encode())
        return next(i for i in range(len(self.servers)) if slot in _slots(i, len(self.servers)))

    def flush(self) -> None:
        """Empty every primary (FLUSHALL is per node on a cluster)."""
        for client in self.clients():
            with client:
                client.flushall()

    def stop(self) -> None:
        for server in [*self.replicas, *self.servers]:
            server.stop()


def start_redis_cluster(
    data_dir: Path, *, primaries: int = 3, replicas: bool = False
) -> RedisClusterServers:
    """Start ``primaries`` cluster-enabled servers and join them into one cluster (each
    serves an equal range of slots), each with a replica of its own if ``replicas``; returns
    once every node sees the cluster as ``ok`` (and every replica is in sync)."""
    cluster = RedisClusterServers([])
    try:
        for index in range(primaries):
            cluster.servers.append(_start_node(data_dir / f"node-{index}"))
        if replicas:
            for index in range(primaries):
                cluster.replicas.append(_start_node(data_dir / f"replica-{index}"))
        _join(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_node(folder: Path) -> RedisServer:
    folder.mkdir(parents=True, exist_ok=True)
    return start_redis_server(folder, port=_port_with_free_bus(), extra_args=_CLUSTER_ARGS)


def _client(server: RedisServer) -> redis_sync.Redis:
    return redis_sync.Redis(host=server.host, port=server.port, decode_responses=True)


def _slots(index: int, count: int) -> range:
    return range(SLOTS * index // count, SLOTS * (index + 1) // count)


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
    primaries = [_client(server) for server in cluster.servers]
    replicas = [_client(server) for server in cluster.replicas]
    everyone = primaries + replicas
    try:
        for index, client in enumerate(primaries):
            client.cluster("ADDSLOTS", *_slots(index, len(primaries)))
        seed = cluster.servers[0]
        for client in everyone[1:]:
            client.cluster("MEET", seed.host, seed.port)
        wait_for_condition_sync(
            lambda: all(_knows(client, len(everyone)) for client in everyone),
            timeout_s=20,
            interval_s=0.05,
            what="every redis cluster node known to every node",
        )
        for primary, replica in zip(primaries, replicas, strict=False):
            replica.cluster("REPLICATE", primary.cluster("MYID"))
        wait_for_condition_sync(
            lambda: (
                all(_in_sync(client) for client in replicas)
                and all(_sees_whole_cluster(client, len(everyone)) for client in everyone)
            ),
            timeout_s=20,
            interval_s=0.05,
            what="redis cluster ok on every node",
        )
    finally:
        for client in everyone:
            client.close()


def _knows(client: redis_sync.Redis, nodes: int) -> bool:
    return int(client.cluster("INFO")["cluster_known_nodes"]) == nodes


def _in_sync(replica: redis_sync.Redis) -> bool:
    info = replica.info("replication")
    return bool(info["role"] == "slave" and info.get("master_link_status") == "up")


def _sees_whole_cluster(client: redis_sync.Redis, nodes: int) -> bool:
    info = client.cluster("INFO")
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == nodes)
