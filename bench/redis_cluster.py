"""The queue's scripts on one Redis and on a three-primary Redis Cluster, and a failover.

Starts an embedded Redis and a three-primary cluster of the same binary (the test kit's
``start_redis_cluster``), then, taking turns for ``--rounds`` rounds so both see the same
machine, runs ``--tasks`` submits (``TaskQueue.submit``: record, indexes and queue in one
script), as many claims and as many task ends (``TaskStore.apply(Cancelled())``: the end
script with usage and the webhook outbox) from this one process, ``--concurrency`` calls at a
time, and prints each phase's rate. Last, a cluster with a replica per primary: the primary of
the shared slot is killed (after ``WAIT`` shows its replica has every write) and the bench
times until the replica serves and until a submit through a client that was connected before
succeeds.

    ./dev bench redis_cluster [--tasks 2000] [--concurrency 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis as redis_sync
from _common import print_grid
from redis.exceptions import RedisError

from comfy_shared.lifecycle import Cancelled
from comfy_shared.models import TaskRecord
from comfy_shared.redis_client import connect_redis, is_cluster_url
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_stack.embedded_redis import start_redis_server
from comfy_testkit.redis_cluster import RedisClusterServers, start_redis_cluster

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {}}}


async def in_batches(count: int, width: int, call: Callable[[int], Awaitable[object]]) -> float:
    """Calls per second of ``call(0..count-1)``, ``width`` at a time."""
    started = time.perf_counter()
    for first in range(0, count, width):
        await asyncio.gather(*(call(n) for n in range(first, min(first + width, count))))
    return count / (time.perf_counter() - started)


async def rates(url: str, tasks: int, width: int, round_: int) -> list[float]:
    """Submits, claims and ends a second on the Redis at ``url``."""
    redis = await connect_redis(url)
    keys = RedisKeys("bench", cluster=is_cluster_url(url))
    store = TaskStore(redis, keys)
    queue = TaskQueue(redis, keys, store)
    ids = [f"r{round_}-{n}" for n in range(tasks)]
    try:
        return [
            await in_batches(tasks, width, lambda n: queue.submit(TaskRecord(id=ids[n]), PROMPT)),
            await in_batches(tasks, width, lambda n: queue.claim(ids[n], "gpu-0", 10**9)),
            await in_batches(tasks, width, lambda n: store.apply(ids[n], Cancelled())),
        ]
    finally:
        await redis.aclose()


async def failover(folder: Path) -> tuple[float, float]:
    """Seconds from killing the shared slot's primary until its replica serves, and until a
    submit succeeds through a client connected before."""
    cluster = start_redis_cluster(folder, replicas=True)
    redis = await connect_redis(cluster.url)
    keys = RedisKeys("bench", cluster=True)
    queue = TaskQueue(redis, keys, TaskStore(redis, keys))
    try:
        await queue.submit(TaskRecord(id="before"), PROMPT)
        crashed = crash_primary(cluster, keys.root)
        promoted = await until(lambda: replica_serves(cluster, keys.root))
        submitted = await until(lambda: submits(queue))
        return promoted - crashed, submitted - crashed
    finally:
        await redis.aclose()
        cluster.stop()


def crash_primary(cluster: RedisClusterServers, key: str) -> float:
    index = cluster.serving(key)
    with cluster.clients()[index] as client:
        client.execute_command("WAIT", 1, 5000)
    cluster.servers[index].process.send_signal(signal.SIGKILL)
    return time.monotonic()


async def replica_serves(cluster: RedisClusterServers, key: str) -> bool:
    replica = cluster.replicas[cluster.serving(key)]
    with redis_sync.Redis(host=replica.host, port=replica.port) as client:
        return bool(client.info("replication")["role"] == "master")


async def submits(queue: TaskQueue) -> bool:
    try:
        await queue.submit(TaskRecord(id=f"after-{time.monotonic_ns()}"), PROMPT)
    except RedisError:
        return False
    return True


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> float:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("no failover")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        single = start_redis_server(Path(folder) / "single")
        cluster = start_redis_cluster(Path(folder) / "cluster")
        rows: list[list[str]] = []
        try:
            for round_ in range(args.rounds):
                for name, url in (("one Redis", single.url), ("cluster", cluster.url)):
                    got = await rates(url, args.tasks, args.concurrency, round_)
                    rows.append([f"{name}, round {round_ + 1}", *(f"{rate:,.0f}" for rate in got)])
        finally:
            single.stop()
            cluster.stop()
        print_grid(("Redis", "submits/s", "claims/s", "ends/s"), rows)
        promoted_s, submitted_s = await failover(Path(folder) / "failover")
        print(f"\nsummary: after the shared slot's primary was killed its replica served in "
              f"{promoted_s:.2f} s, a submit succeeded in {submitted_s:.2f} s")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
