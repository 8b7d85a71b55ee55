"""How fast ``GET /api/v1/tasks`` answers with filters over 10,000 recent tasks.

Starts an embedded Redis and one balancer (its own process, no node: listing needs none),
stores ``--tasks`` task records through ``TaskStore.create`` (the code path a submit takes:
the record, the recent indexes, the filter fields), spread over the last 10 hours: 20
tenants, 10 nodes, 4 workflows, 1 % failed. Then times ``--requests`` first pages (limit 50)
of each filter through the balancer's HTTP API, taking turns so all see the same machine,
and the same pages read as the route did before the filters (``recent_ids`` then
``find_many``, ``limit`` records at a time, the filter applied to the records: in this
process, no HTTP, so it is flattered). Last, it walks every page of the rare filter.

    ./dev bench task_list [--tasks 10000] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from _common import API, QUIET_LOGS, Latencies, local_redis, print_grid

from comfy_shared.api.schemas import TaskView
from comfy_shared.models import Attempt, OutputKind, TaskOutput, TaskRecord
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_testkit.stack import start_balancer_process

LIMIT = 50
SPAN = timedelta(hours=10)
TENANTS, NODES = 20, 10
WORKFLOWS = ("txt2img-sdxl", "img2img-sdxl", "img2video", "demo")
NOW = datetime.now(UTC)
WINDOW = (NOW - timedelta(hours=5), NOW - timedelta(hours=4))

Keep = Callable[[TaskRecord], bool]


def record_of(n: int, count: int) -> TaskRecord:
    """Task ``n`` of ``count``, oldest first: every 100th failed, the others succeeded."""
    created = NOW - SPAN + SPAN * n / count
    node = f"gpu-{n % NODES}"
    return TaskRecord(
        id=f"task-{n:05d}",
        status=TaskStatus.FAILED if n % 100 == 7 else TaskStatus.SUCCEEDED,
        created_at=created,
        started_at=created + timedelta(seconds=2),
        finished_at=created + timedelta(seconds=9),
        node_id=node,
        attempts=1,
        attempt_log=[Attempt(number=1, node_id=node, dispatched_at=created)],
        outputs=[
            TaskOutput(node_id="9", kind=OutputKind.IMAGE, filename=f"out_{n:05d}_.png", size=1)
        ],
        tenant=f"tenant-{n % TENANTS:02d}",
        workflow=WORKFLOWS[n % len(WORKFLOWS)],
        params={"prompt": "a lighthouse at dusk, volumetric light", "seed": n, "steps": 30},
    )


async def seed(redis_url: str, count: int) -> None:
    redis = await connect_redis(redis_url)
    store = TaskStore(redis, RedisKeys())
    for start in range(0, count, 500):
        batch = range(start, min(count, start + 500))
        await asyncio.gather(*(store.create(record_of(n, count)) for n in batch))
    await redis.aclose()


FILTERS: dict[str, tuple[dict[str, Any], str | None, Keep]] = {
    # name: (query, the index the old route read (a tenant's), the filter on records)
    "no filter": ({}, None, lambda r: True),
    "status=failed (1 %)": ({"status": "failed"}, None, lambda r: r.status == "failed"),
    "tenant (5 %)": ({"tenant": "tenant-07"}, "tenant-07", lambda r: True),
    "node (10 %)": ({"node": "gpu-3"}, None, lambda r: r.node_id == "gpu-3"),
    "workflow (25 %)": ({"workflow": "demo"}, None, lambda r: r.workflow == "demo"),
    "1 h window, 5 h ago": (
        {"since": WINDOW[0].isoformat(), "until": WINDOW[1].isoformat()},
        None,
        lambda r: WINDOW[0] <= r.created_at < WINDOW[1],
    ),
    "workflow no task has (0 %)": ({"workflow": "none"}, None, lambda r: r.workflow == "none"),
    "window + node + failed": (
        {"since": WINDOW[0].isoformat(), "node": "gpu-7", "status": "failed"},
        None,
        lambda r: r.created_at >= WINDOW[0] and r.node_id == "gpu-7" and r.status == "failed",
    ),
}


async def old_first_page(store: TaskStore, tenant: str | None, keep: Keep) -> int:
    """The loop the route ran before the filters, with ``keep`` for its status check."""
    offset, found = 0, 0
    while found < LIMIT:
        ids = await store.recent_ids(offset, LIMIT, tenant)
        if not ids:
            return found
        records = await store.find_many(ids)
        for task_id in ids:
            offset += 1
            record = records[task_id]
            if record is not None and keep(record):
                TaskView.from_record(record).model_dump_json()
                found += 1
                if found == LIMIT:
                    break
    return found


def time_new(http: httpx.Client, query: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    response = http.get(f"{API}/tasks", params={**query, "limit": LIMIT})
    elapsed_ms = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed_ms, len(response.json()["tasks"])


async def time_old(redis_url: str, requests: int) -> dict[str, Latencies]:
    redis = await connect_redis(redis_url)
    store = TaskStore(redis, RedisKeys())
    timings: dict[str, Latencies] = {}
    for name, (_, tenant, keep) in FILTERS.items():
        samples, wall = [], time.monotonic()
        for _ in range(requests):
            started = time.perf_counter()
            await old_first_page(store, tenant, keep)
            samples.append((time.perf_counter() - started) * 1000)
        timings[name] = Latencies(name, samples, time.monotonic() - wall)
    await redis.aclose()
    return timings


def walk(http: httpx.Client, query: dict[str, Any]) -> tuple[int, int, float]:
    """Every page of a filter: (requests, tasks, total ms)."""
    pages, tasks, cursor = 0, 0, None
    started = time.perf_counter()
    while True:
        params = {**query, "limit": LIMIT, **({"cursor": cursor} if cursor else {})}
        page = http.get(f"{API}/tasks", params=params).raise_for_status().json()
        pages, tasks, cursor = pages + 1, tasks + len(page["tasks"]), page["next_cursor"]
        if cursor is None:
            return pages, tasks, (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()

    with local_redis() as (root, redis):
        started = time.monotonic()
        asyncio.run(seed(redis.url, args.tasks))
        print(f"{args.tasks} tasks stored in {time.monotonic() - started:.1f} s")
        balancer = start_balancer_process(
            Path(root) / "logs", redis_url=redis.url, extra_args=list(QUIET_LOGS)
        )
        try:
            with httpx.Client(
                base_url=balancer.url, headers=balancer.auth_headers, timeout=30
            ) as http:
                report(http, redis.url, args.requests)
        finally:
            balancer.stop()


def report(http: httpx.Client, redis_url: str, requests: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name in FILTERS}
    found: dict[str, int] = {}
    for _ in range(requests):
        for name, (query, _, _) in FILTERS.items():
            elapsed_ms, found[name] = time_new(http, query)
            samples[name].append(elapsed_ms)
    old = asyncio.run(time_old(redis_url, requests))
    rows = []
    for name, values in samples.items():
        new = Latencies(name, values, 1.0)
        rows.append(
            (
                name,
                str(found[name]),
                f"{new.p50:.1f}",
                f"{new.p95:.1f}",
                f"{old[name].p50:.1f}",
                f"{old[name].p95:.1f}",
            )
        )
    print(f"first page (limit {LIMIT}), {requests} requests each:")
    header = ("filter", "tasks", "p50 ms", "p95 ms", "old p50 ms", "old p95 ms")
    print_grid(header, rows)
    for name in ("status=failed (1 %)", "window + node + failed"):
        pages, tasks, total_ms = walk(http, FILTERS[name][0])
        print(f"every page of {name}: {tasks} tasks in {pages} requests, {total_ms:.0f} ms")


if __name__ == "__main__":
    main()
