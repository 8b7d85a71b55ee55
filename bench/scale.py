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

(c) Fair queue with many tenants, straight on ``TaskQueue`` (no balancer). For each of
``--tenants`` (default 1, then 1,000), an emptied Redis is filled up to each of ``--levels``
as the balancer's intake does: ``TaskQueue.submit`` with ``Share(flow=tenant, cost_s=...,
weight=...)`` (task i belongs to tenant i mod N; costs drawn from 5/10/20/40 steps at 0.75 s
a step plus 0.1 s, a fixed seed; every tenth tenant has weight 2). At each depth, sequential
samples of: a submit of one more task for a random tenant; ``TaskQueue.position`` of a random
queued task; a placement, the dispatcher's two queue calls: ``head(64)`` (``--lookahead``'s
default) and ``claim`` of its first task on a node with room (then, unmeasured, ``requeue``
puts it back at its old place, so the depth stays); and ``--urgent`` submits with priority 1
for a random tenant (it takes the turn of that tenant's first priority-0 task, and each of
those moves to the next). Every figure is compared between depths (O(log n) grows by
log(100k) / log(1k) = 1.67 at most from 1k to 100k) and between the tenant counts.

    ./dev bench scale [--parts a b c] [--levels 1000 10000 100000] [--concurrency 64]
        [--samples 200] [--nodes 5 50] [--tasks 3000] [--tenants 1 1000] [--urgent 5]
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
from comfy_shared.task_queue import Share, TaskQueue
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
LOOKAHEAD = 64
"""The dispatcher's default ``--lookahead``: the queue head it reads per round."""
ROOMY_SLOTS = 10**9
"""Slots of the node placements go to in (c): it never fills."""
COST_STEPS = (5, 10, 20, 40)


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
class FairLevel:
    tenants: int
    pending: int
    fill_rate: float  # submits/s filling up to this depth, ``--concurrency`` in flight
    submit_ms: list[float]
    position_ms: list[float]
    place_ms: list[float]  # head(LOOKAHEAD) + claim of its first task
    urgent_ms: list[float]  # a priority-1 submit into a flow of priority-0 tasks


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
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 1_000], help="for (c)")
    parser.add_argument("--urgent", type=int, default=5, help="priority-1 submits per depth")
    parser.add_argument("--parts", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"])
    args = parser.parse_args()
    results = asyncio.run(_main(args))

    if results.levels:
        print(
            f"(a) pending queue: balancer with no nodes; {args.concurrency} submits in flight; "
            f"{args.samples} sequential samples per latency\n"
        )
        _print_levels(results.levels)
    if results.placements:
        print(
            f"\n(b) dispatcher: {args.tasks} tasks per run onto N fake nodes (2 slots each) "
            "that finish every task at once\n"
        )
        _print_placements(results.placements)
    if results.fair:
        print(
            f"\n(c) fair queue, TaskQueue alone: {args.concurrency} submits in flight to fill; "
            f"{args.samples} sequential samples per latency ({args.urgent} urgent submits)\n"
        )
        _print_fair_levels(results.fair)
        print()
        _print_fair_ratios(results.fair)
    print(_summary(results))


@dataclass(frozen=True)
class Results:
    levels: list[Level]
    placements: list[Placement]
    fair: list[FairLevel]


async def _main(args: argparse.Namespace) -> Results:
    with local_redis() as (root, server):
        redis = await connect_redis(server.url)
        try:
            store = TaskStore(redis, KEYS)
            queue = TaskQueue(redis, KEYS, store)
            levels = []
            if "a" in args.parts:
                levels = await _queue_depth(root, server, redis, queue, args)
            placements = []
            if "b" in args.parts:
                await redis.flushall()
                capabilities = _emulator_capabilities(root)
                placements = [
                    await _dispatch(
                        root, server, redis, store, queue, count, args.tasks, capabilities
                    )
                    for count in args.nodes
                ]
            fair = []
            if "c" in args.parts:
                fair = [
                    level
                    for tenants in args.tenants
                    for level in await _many_tenants(redis, queue, tenants, args)
                ]
        finally:
            await redis.aclose()
    return Results(levels, placements, fair)


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
                await submit_range(queue, submitted, added, args.concurrency)
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


async def submit_range(queue: TaskQueue, start: int, count: int, concurrency: int) -> None:
    """Queue tasks ``scale-<start>`` on (a txt2img graph each) through the balancer's own
    ``TaskQueue.submit``, ``concurrency`` submits in flight."""
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


# (c) -------------------------------------------------------------------------------------


async def _many_tenants(
    redis: Redis, queue: TaskQueue, tenants: int, args: argparse.Namespace
) -> list[FairLevel]:
    await redis.flushall()
    draw = random.Random(tenants)
    levels: list[FairLevel] = []
    submitted = 0
    for target in sorted(args.levels):
        added = target - await queue.length()
        started = time.perf_counter()
        await _submit_shared(queue, range(submitted, submitted + added), tenants, args.concurrency)
        fill_s = time.perf_counter() - started
        submitted += added
        queued = [_fair_id(draw.randrange(submitted)) for _ in range(args.samples)]
        extra = range(submitted, submitted + args.samples)
        submitted += args.samples
        urgent = range(submitted, submitted + args.urgent)
        submitted += args.urgent
        levels.append(
            FairLevel(
                tenants=tenants,
                pending=target,
                fill_rate=added / fill_s,
                submit_ms=await _timed_each_index(extra, lambda i: _submit_one(queue, i, tenants)),
                position_ms=await _timed_each(queued, queue.position),
                place_ms=await _timed_placements(queue, args.samples),
                urgent_ms=await _timed_each_index(
                    urgent, lambda i: _submit_one(queue, i, tenants, priority=1)
                ),
            )
        )
    return levels


def _fair_id(index: int) -> str:
    return f"fair-{index}"


def _share_of(index: int, tenants: int) -> Share:
    """Task ``index``'s tenant (round robin), cost (a fixed draw) and weight (2 for every
    tenth tenant)."""
    tenant = index % tenants
    steps = COST_STEPS[random.Random(index).randrange(len(COST_STEPS))]
    return Share(
        flow=f"tenant-{tenant}", cost_s=0.1 + steps * 0.75, weight=2.0 if tenant % 10 == 9 else 1.0
    )


async def _submit_one(queue: TaskQueue, index: int, tenants: int, *, priority: int = 0) -> None:
    share = _share_of(index, tenants)
    record = TaskRecord(
        id=_fair_id(index), retry=POLICY, priority=priority, tenant=share.flow, key_id=None
    )
    await queue.submit(record, txt2img(f"fair/{index}", seed=index), share=share)


async def _submit_shared(queue: TaskQueue, indexes: range, tenants: int, concurrency: int) -> None:
    pending = iter(indexes)

    async def worker() -> None:
        for index in pending:
            await _submit_one(queue, index, tenants)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _timed_each_index(indexes: range, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for index in indexes:
        started = time.perf_counter()
        await call(index)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _timed_placements(queue: TaskQueue, count: int) -> list[float]:
    """What a dispatch round asks of the queue to place one task; the task goes back to its
    place afterwards (unmeasured), so every sample sees the same depth."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        head = await queue.head(LOOKAHEAD)
        claimed = await queue.claim(head[0], "node-bench", ROOMY_SLOTS)
        samples.append((time.perf_counter() - started) * 1000)
        if claimed != 1:
            raise SystemExit(f"claim of {head[0]} answered {claimed}")
        await queue.requeue(head[0], "node-bench")
    return samples


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


def _print_fair_levels(levels: list[FairLevel]) -> None:
    header = (
        "tenants",
        "pending",
        "fill submits/s",
        "submit p50/p99 ms",
        "position p50/p99 ms",
        "head+claim p50/p99 ms",
        "urgent submit p50/max ms",
    )
    rows = [
        (
            f"{level.tenants:,}",
            f"{level.pending:,}",
            f"{level.fill_rate:,.0f}",
            _p50_p99(level.submit_ms),
            _p50_p99(level.position_ms),
            _p50_p99(level.place_ms),
            f"{percentile(level.urgent_ms, 50):.2f} / {max(level.urgent_ms, default=0):.2f}",
        )
        for level in levels
    ]
    print_grid(header, rows)


FAIR_FIGURES: tuple[tuple[str, Callable[[FairLevel], list[float]]], ...] = (
    ("submit", lambda level: level.submit_ms),
    ("position", lambda level: level.position_ms),
    ("head+claim", lambda level: level.place_ms),
    ("urgent submit", lambda level: level.urgent_ms),
)


def _p50_ratio(level: FairLevel, against: FairLevel) -> list[str]:
    return [
        f"{percentile(samples(level), 50) / percentile(samples(against), 50):.2f}"
        for _, samples in FAIR_FIGURES
    ]


def _print_fair_ratios(levels: list[FairLevel]) -> None:
    """p50 ratios: each depth against the shallowest (same tenants), and each tenant count
    against the first (same depth)."""
    shallowest: dict[int, FairLevel] = {}
    first_count: dict[int, FairLevel] = {}
    rows = []
    for level in levels:
        low = shallowest.setdefault(level.tenants, level)
        if low is not level:
            label = f"{_tenants(level.tenants)}: {level.pending:,} / {low.pending:,} pending"
            rows.append((label, *_p50_ratio(level, low)))
    for level in levels:
        base = first_count.setdefault(level.pending, level)
        if base is not level:
            label = f"{level.pending:,} pending: {level.tenants:,} / {_tenants(base.tenants)}"
            rows.append((label, *_p50_ratio(level, base)))
    print_grid(("p50 ratio", *(name for name, _ in FAIR_FIGURES)), rows)


def _summary(results: Results) -> str:
    parts = []
    if results.levels:
        parts.append(_queue_summary(results.levels))
    if results.placements:
        parts.append(_dispatch_summary(results.placements))
    if results.fair:
        parts.append(_fair_summary(results.fair))
    return "summary: " + "; ".join(parts)


def _tenants(count: int) -> str:
    return f"{count:,} tenant" if count == 1 else f"{count:,} tenants"


def _fair_summary(levels: list[FairLevel]) -> str:
    """p50 at the shallowest and the deepest level, per tenant count."""
    shallowest = min(level.pending for level in levels)
    deepest = max(level.pending for level in levels)
    described = []
    for tenants in dict.fromkeys(level.tenants for level in levels):
        own = {level.pending: level for level in levels if level.tenants == tenants}
        changes = ", ".join(
            f"{name} {percentile(samples(own[shallowest]), 50):.2f} -> "
            f"{percentile(samples(own[deepest]), 50):.2f}"
            for name, samples in FAIR_FIGURES
        )
        described.append(f"{_tenants(tenants)}, {shallowest:,} -> {deepest:,} pending: {changes}")
    return "fair queue p50 ms: " + "; ".join(described)


def _queue_summary(levels: list[Level]) -> str:
    deepest = levels[-1]
    first = levels[0]
    return (
        f"at {deepest.pending:,} pending: submit {deepest.added / deepest.submit_s:,.0f}/s, "
        f"{deepest.bytes_per_task / 1024:.1f} KiB/task in Redis, GET task p99 "
        f"{percentile(deepest.get_ms, 99):.2f} ms (vs {percentile(first.get_ms, 99):.2f} at "
        f"{first.pending:,}), position p99 {percentile(deepest.position_ms, 99):.2f} ms"
    )


def _dispatch_summary(placements: list[Placement]) -> str:
    return "dispatcher: " + ", ".join(
        f"{p.nodes} nodes {p.tasks / p.wall_s:,.0f} placed/s at "
        f"{p.balancer_s / p.tasks * 1000:.2f} ms balancer CPU/task"
        for p in placements
    )


if __name__ == "__main__":
    main()
