"""Scale: a deep pending queue, and the dispatcher placing tasks on many nodes.

(a) Queue depth. One embedded Redis and one real balancer process with no nodes (so nothing
leaves the queue; ``--max-queue`` raised so it accepts submits at any depth). This process
fills the queue with ``TaskQueue.submit`` (the balancer's own submit: one Lua script storing
the task, its txt2img graph and first event, and queuing it), ``--concurrency`` submits in
flight, up to each of ``--levels`` pending tasks. At each level: submit rate, Redis memory per
task (``INFO memory`` used_memory delta / tasks added), and sequential latencies against the
full queue: ``GET /api/v1/tasks/{id}`` of random queued tasks through the balancer (reads the
record and its queue position), the position alone (``TaskQueue.position``: ZRANK from here)
and ``POST /api/v1/generate`` through the balancer.

(b) Dispatcher with many nodes, no emulators. For each of ``--nodes`` (default 5, then 50): a
fresh balancer, ``--tasks`` tasks queued while no node exists, then that many NodeHealth
documents written straight into Redis (``RedisKeys.node_health`` + the ``nodes`` zset; node
classes and model files copied from an emulator's ``/object_info``, as a real service
publishes them), all pointing at one fake service in this process. It answers
``POST /api/v1/generate`` with 202 and at once marks the task succeeded through ``TaskStore``
(which frees the slot and signals the balancer), i.e. infinitely fast GPUs. Measured: time
until every task succeeded (placements/s) and the CPU the balancer process used meanwhile, per
task (its whole loop: reading the nodes, sweeping, choosing, claiming, recording, sending),
and that CPU over the wall time ("balancer busy": near 100 % the single-threaded balancer is the
bottleneck, so placements/s is about 1 / its CPU per task); Redis and the fake service too.

    ./dev bench scale [--levels 1000 10000 100000] [--concurrency 64] [--samples 200]
        [--nodes 5 50] [--tasks 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import (
    API,
    QUIET_LOGS,
    cpu_seconds,
    local_redis,
    percentile,
    print_grid,
)
from _standin import FakeService, capabilities_of, publish_nodes
from redis.asyncio import Redis

from comfy_shared.models import (
    Capabilities,
    RetryPolicy,
    TaskRecord,
)
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_stack.embedded_redis import RedisServer
from comfy_testkit.graphs import txt2img
from comfy_testkit.stack import (
    AUTH_HEADERS,
    RunningComponent,
    start_balancer_process,
    start_emulator_process,
)

KEYS = RedisKeys()
POLICY = RetryPolicy(max_attempts=3, retry_on=["OutOfMemoryError", "out of memory"])
NO_QUEUE_LIMIT = ("--max-queue", "10000000")


@dataclass(frozen=True)
class Level:
    pending: int
    added: int
    submit_s: float
    bytes_per_task: float
    redis_ms_per_submit: float
    client_ms_per_submit: float  # this process: building each task and the submit call
    get_ms: list[float]
    position_ms: list[float]
    post_ms: list[float]


@dataclass(frozen=True)
class Placement:
    nodes: int
    tasks: int
    wall_s: float
    balancer_s: float
    redis_s: float
    fake_service_s: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--concurrency", type=int, default=64, help="submits in flight")
    parser.add_argument("--samples", type=int, default=200, help="latency samples per figure")
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 50], help="fake nodes")
    parser.add_argument("--tasks", type=int, default=3000, help="tasks placed per node count")
    args = parser.parse_args()
    levels, placements = asyncio.run(_main(args))

    print(
        f"(a) pending queue: balancer with no nodes; {args.concurrency} submits in flight; "
        f"{args.samples} sequential samples per latency\n"
    )
    _print_levels(levels)
    print(
        f"\n(b) dispatcher: {args.tasks} tasks per run onto N fake nodes (2 slots each) that "
        "finish every task at once\n"
    )
    _print_placements(placements)
    print(_summary(levels, placements))


async def _main(args: argparse.Namespace) -> tuple[list[Level], list[Placement]]:
    with local_redis() as (root, server):
        redis = await connect_redis(server.url)
        try:
            store = TaskStore(redis, KEYS)
            queue = TaskQueue(redis, KEYS, store)
            levels = await _queue_depth(root, server, redis, queue, args)
            await redis.flushall()
            capabilities = _emulator_capabilities(root)
            placements = [
                await _dispatch(root, server, redis, store, queue, count, args.tasks, capabilities)
                for count in args.nodes
            ]
        finally:
            await redis.aclose()
    return levels, placements


# (a) -------------------------------------------------------------------------------------


async def _queue_depth(
    root: Path, server: RedisServer, redis: Redis, queue: TaskQueue, args: argparse.Namespace
) -> list[Level]:
    balancer = _start_balancer(root, server, "balancer-queue")
    levels: list[Level] = []
    try:
        async with httpx.AsyncClient(
            base_url=f"{balancer.url}{API}", timeout=30, headers=AUTH_HEADERS
        ) as http:
            submitted = 0
            for target in sorted(args.levels):
                added = target - await queue.length()  # the POST samples count too
                memory_before = await _used_memory(redis)
                redis_before = cpu_seconds({"redis": server.process.pid})["redis"]
                own_before, started = time.process_time(), time.perf_counter()
                await _submit_range(queue, submitted, added, args.concurrency)
                submit_s = time.perf_counter() - started
                own_used = time.process_time() - own_before
                redis_used = cpu_seconds({"redis": server.process.pid})["redis"] - redis_before
                memory_after = await _used_memory(redis)
                submitted += added
                ids = [_task_id(random.randrange(submitted)) for _ in range(args.samples)]
                levels.append(
                    Level(
                        pending=await queue.length(),
                        added=added,
                        submit_s=submit_s,
                        bytes_per_task=(memory_after - memory_before) / added,
                        redis_ms_per_submit=redis_used / added * 1000,
                        client_ms_per_submit=own_used / added * 1000,
                        get_ms=await _timed_each(ids, lambda i: _get_task(http, i)),
                        position_ms=await _timed_each(ids, queue.position),
                        post_ms=await _timed_each(ids, lambda i: _post_task(http, i)),
                    )
                )
    finally:
        balancer.stop()
    return levels


def _task_id(index: int) -> str:
    return f"scale-{index}"


async def _submit_range(queue: TaskQueue, start: int, count: int, concurrency: int) -> None:
    indexes = iter(range(start, start + count))

    async def worker() -> None:
        for index in indexes:
            record = TaskRecord(id=_task_id(index), retry=POLICY)
            await queue.submit(record, txt2img(f"scale/{index}", seed=index))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _used_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def _timed_each(ids: list[str], call: Callable[[str], Awaitable[Any]]) -> list[float]:
    samples = []
    for task_id in ids:
        started = time.perf_counter()
        await call(task_id)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _get_task(http: httpx.AsyncClient, task_id: str) -> None:
    response = await http.get(f"/tasks/{task_id}")
    response.raise_for_status()
    if response.json()["queue_position"] is None:
        raise SystemExit(f"{task_id} has no queue position: is something placing tasks?")


async def _post_task(http: httpx.AsyncClient, task_id: str) -> None:
    """A new task through the balancer (the id is only a seed for a distinct graph)."""
    seed = random.randrange(2**32)
    graph = txt2img(f"scale/post/{task_id}/{seed}", seed=seed)
    response = await http.post("/generate", json={"prompt": graph})
    response.raise_for_status()


# (b) -------------------------------------------------------------------------------------


async def _dispatch(
    root: Path,
    server: RedisServer,
    redis: Redis,
    store: TaskStore,
    queue: TaskQueue,
    nodes: int,
    tasks: int,
    capabilities: Capabilities,
) -> Placement:
    await redis.flushall()
    fake = FakeService(store)
    runner = await fake.start()
    balancer = _start_balancer(root, server, f"balancer-{nodes}-nodes")
    try:
        base = f"dispatch-{nodes}"
        indexes = iter(range(tasks))

        async def worker() -> None:
            for index in indexes:
                record = TaskRecord(id=f"{base}-{index}", retry=POLICY)
                await queue.submit(record, txt2img(f"{base}/{index}", seed=index))

        await asyncio.gather(*(worker() for _ in range(32)))
        await asyncio.sleep(1.0)  # the balancer has seen every queued signal by now
        fake.expect(tasks)
        pids = {"balancer": balancer.process.pid, "redis": server.process.pid}
        before, own_before = cpu_seconds(pids), time.process_time()
        started = time.perf_counter()
        await publish_nodes(redis, KEYS, fake, nodes, capabilities)
        try:
            await asyncio.wait_for(fake.all_done.wait(), timeout=60 + tasks / 20)
        except TimeoutError:
            raise SystemExit(f"only {fake.finished} of {tasks} tasks finished in time") from None
        wall_s = time.perf_counter() - started
        after, own_after = cpu_seconds(pids), time.process_time()
        if await queue.length():
            raise SystemExit("tasks are left in the queue")
    finally:
        balancer.stop()
        await runner.cleanup()
    return Placement(
        nodes=nodes,
        tasks=tasks,
        wall_s=wall_s,
        balancer_s=after["balancer"] - before["balancer"],
        redis_s=after["redis"] - before["redis"],
        fake_service_s=own_after - own_before,
    )


def _emulator_capabilities(root: Path) -> Capabilities:
    emulator = start_emulator_process(
        root / "logs", root / "emulator-capabilities", extra_args=["--quiet"]
    )
    try:
        return capabilities_of(f"{emulator.url}/object_info")
    finally:
        emulator.stop()


def _start_balancer(root: Path, server: RedisServer, name: str) -> RunningComponent:
    return start_balancer_process(
        root / "logs", redis_url=server.url, name=name, extra_args=[*QUIET_LOGS, *NO_QUEUE_LIMIT]
    )


# output -----------------------------------------------------------------------------------


def _print_levels(levels: list[Level]) -> None:
    header = (
        "pending",
        "submits/s",
        "bytes/task",
        "client CPU ms/submit",
        "redis ms/submit",
        "GET task p50/p99 ms",
        "position p50/p99 ms",
        "POST generate p50/p99 ms",
    )
    rows = [
        (
            f"{level.pending:,}",
            f"{level.added / level.submit_s:,.0f}",
            f"{level.bytes_per_task:,.0f}",
            f"{level.client_ms_per_submit:.3f}",
            f"{level.redis_ms_per_submit:.3f}",
            _p50_p99(level.get_ms),
            _p50_p99(level.position_ms),
            _p50_p99(level.post_ms),
        )
        for level in levels
    ]
    print_grid(header, rows)


def _p50_p99(samples: list[float]) -> str:
    return f"{percentile(samples, 50):.2f} / {percentile(samples, 99):.2f}"


def _print_placements(placements: list[Placement]) -> None:
    header = (
        "nodes",
        "tasks",
        "wall s",
        "placed/s",
        "balancer CPU ms/task",
        "balancer busy",
        "redis ms/task",
        "fake service ms/task",
    )
    rows = [
        (
            str(p.nodes),
            str(p.tasks),
            f"{p.wall_s:.2f}",
            f"{p.tasks / p.wall_s:,.0f}",
            f"{p.balancer_s / p.tasks * 1000:.2f}",
            f"{p.balancer_s / p.wall_s:.0%}",
            f"{p.redis_s / p.tasks * 1000:.2f}",
            f"{p.fake_service_s / p.tasks * 1000:.2f}",
        )
        for p in placements
    ]
    print_grid(header, rows)


def _summary(levels: list[Level], placements: list[Placement]) -> str:
    deepest = levels[-1]
    first = levels[0]
    queue_part = (
        f"at {deepest.pending:,} pending: submit {deepest.added / deepest.submit_s:,.0f}/s, "
        f"{deepest.bytes_per_task / 1024:.1f} KiB/task in Redis, GET task p99 "
        f"{percentile(deepest.get_ms, 99):.2f} ms (vs {percentile(first.get_ms, 99):.2f} at "
        f"{first.pending:,}), position p99 {percentile(deepest.position_ms, 99):.2f} ms"
    )
    dispatch_part = ", ".join(
        f"{p.nodes} nodes {p.tasks / p.wall_s:,.0f} placed/s at "
        f"{p.balancer_s / p.tasks * 1000:.2f} ms balancer CPU/task"
        for p in placements
    )
    return f"summary: {queue_part}; dispatcher: {dispatch_part}"


if __name__ == "__main__":
    main()
