"""What acknowledging a submit only once a Redis replica holds it costs (``--submit-replicas``).

Starts a Redis primary, its replica and three sentinels (``comfy_testkit.sentinel``), and two
balancers that find the primary through the sentinels and have no nodes (they only queue: the
submit path alone): one answers once the primary has the task, the other once the replica
has it too (``--submit-replicas 1``, Redis ``WAIT``). For each append-only
fsync policies (``always``: every write on disk before Redis answers; ``everysec``: at most a
second of writes lost in a crash), set on both servers at run time with ``CONFIG SET``, each
balancer takes ``--submits`` submits from ``--concurrency`` clients (closed loop: each sends
its next submit when the last is answered), in ``--rounds`` alternating turns so all see the
same machine; then the same submits go one at a time straight to the task queue (no HTTP,
no balancer), with and without the WAIT: what Redis alone adds. Prints submit latency
p50/p95 and throughput per case side by side, and what the WAIT adds.

    ./dev bench submit_replication [--submits 1000] [--concurrency 4] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import redis as redis_sync
from _common import QUIET_LOGS, percentile, print_grid

from comfy_shared.models import TaskRecord
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import Replication, TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_testkit.graphs import solid_image
from comfy_testkit.sentinel import MASTER_NAME, SentinelGroup
from comfy_testkit.stack import AUTH_HEADERS, RunningComponent, start_balancer_process

FSYNC_POLICIES = ("always", "everysec")
BALANCERS = {"no WAIT": [], "WAIT 1 replica": ["--submit-replicas", "1"]}
QUEUE_CASES = {"queue alone, no WAIT": None, "queue alone, WAIT 1 replica": Replication(1, 1000)}
KEYS = RedisKeys("bench")


async def submit_many(url: str, count: int, concurrency: int) -> tuple[list[float], float]:
    """``count`` submits from ``concurrency`` clients: (latencies in ms, wall seconds)."""
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=AUTH_HEADERS, timeout=30) as client:

        async def one_client(share: int) -> None:
            for _ in range(share):
                graph = solid_image(f"bench/{uuid.uuid4()}")
                started = time.perf_counter()
                response = await client.post("/api/v1/generate", json={"prompt": graph})
                samples.append((time.perf_counter() - started) * 1000)
                if response.status_code != 202:
                    raise SystemExit(f"submit refused: {response.status_code} {response.text}")

        started = time.perf_counter()
        shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(one_client(share) for share in shares))
        return samples, time.perf_counter() - started


async def queue_many(
    group: SentinelGroup, count: int, replication: Replication | None
) -> list[float]:
    """``count`` submits straight to the task queue, one at a time (no HTTP, no balancer):
    what Redis itself adds. Latencies in ms."""
    redis = await connect_redis(group.target())
    queue = TaskQueue(redis, KEYS, TaskStore(redis, KEYS), replication=replication)
    samples = []
    try:
        for _ in range(count):
            record = TaskRecord(id=str(uuid.uuid4()))
            started = time.perf_counter()
            await queue.submit(record, solid_image(record.id))
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        await redis.aclose()
    return samples


def start_balancers(group: SentinelGroup, log_dir: Path) -> dict[str, RunningComponent]:
    follow = ["--redis-sentinels", group.sentinels_arg, "--redis-sentinel-master", MASTER_NAME]
    return {
        name: start_balancer_process(
            log_dir,
            redis_url="redis://named-by-the-sentinels/0",
            name=f"balancer-{index}",
            extra_args=[*follow, *extra, "--max-queue", "1000000", *QUIET_LOGS],
        )
        for index, (name, extra) in enumerate(BALANCERS.items())
    }


def run(args: argparse.Namespace, folder: Path) -> None:
    group = SentinelGroup(folder / "redis")
    balancers: dict[str, RunningComponent] = {}
    try:
        group.wait_until_replicated()
        balancers = start_balancers(group, folder / "logs")
        samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        walls: dict[tuple[str, str], float] = defaultdict(float)
        per_turn = max(1, args.submits // args.rounds)
        for _ in range(args.rounds):
            for policy in FSYNC_POLICIES:
                set_fsync(group, policy)
                for name, balancer in balancers.items():
                    turn, wall = asyncio.run(submit_many(balancer.url, per_turn, args.concurrency))
                    samples[policy, name] += turn
                    walls[policy, name] += wall
                for name, replication in QUEUE_CASES.items():
                    started = time.perf_counter()
                    samples[policy, name] += asyncio.run(queue_many(group, per_turn, replication))
                    walls[policy, name] += time.perf_counter() - started
        report(samples, walls, args)
    finally:
        for balancer in balancers.values():
            balancer.stop()
        group.stop()


def set_fsync(group: SentinelGroup, policy: str) -> None:
    """On both servers: a replica confirms a write once it applied it, after its own fsync."""
    for server in (group.primary, group.replica):
        with redis_sync.Redis(server.host, server.port) as client:
            client.config_set("appendfsync", policy)


def report(
    samples: dict[tuple[str, str], list[float]],
    walls: dict[tuple[str, str], float],
    args: argparse.Namespace,
) -> None:
    rows = []
    for (policy, name), latencies in samples.items():
        rows.append(
            [
                f"appendfsync {policy}, {name}",
                str(len(latencies)),
                f"{percentile(latencies, 50):.2f}",
                f"{percentile(latencies, 95):.2f}",
                f"{len(latencies) / walls[policy, name]:.0f}",
            ]
        )
    print(f"{args.concurrency} concurrent clients, closed loop, {args.rounds} rounds\n")
    print_grid(["case", "submits", "p50 ms", "p95 ms", "submits/s"], rows)
    pairs = {"balancer": tuple(BALANCERS), "queue alone": tuple(QUEUE_CASES)}
    added = [
        f"{p50_gain(samples, policy, *pair):+.2f} ms ({where}, {policy})"
        for policy in FSYNC_POLICIES
        for where, pair in pairs.items()
    ]
    print(f"\nsummary: waiting for one replica changes a submit's p50 by {', '.join(added)}")


def p50_gain(
    samples: dict[tuple[str, str], list[float]], policy: str, without: str, with_wait: str
) -> float:
    return percentile(samples[policy, with_wait], 50) - percentile(samples[policy, without], 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submits", type=int, default=1000, help="per case")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="comfy-bench-") as folder:
        run(args, Path(folder))


if __name__ == "__main__":
    main()
