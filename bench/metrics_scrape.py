"""How long the balancer takes to answer ``GET /metrics`` (the fleet gauges read from Redis at
scrape time) with a long queue and many API keys with GPU-second budgets.

Starts an embedded Redis and one balancer (its own process, no node: the tasks wait). Times
``--scrapes`` scrapes in three states: empty; ``--tasks`` tasks queued over the three bands
(through ``TaskQueue.submit``, a submit's code path); and ``--keys`` API keys more, each with
a day and a month budget and usage on every day of the month so far. The first scrape of a
day reads each key's earlier days of the month, the later ones only today's: so that the
figure does not depend on today's date, ``Budgets.uses`` (what the scrape calls) is also
timed in this process with its clock on a 31st, the worst day (30 earlier days per key).

    ./dev bench metrics_scrape [--tasks 20000] [--keys 200] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
from _common import QUIET_LOGS, Latencies, local_redis, print_grid

from comfy_balancer.auth.keys import ApiKey, KeyStore, NewKey
from comfy_balancer.budgets import Budgets
from comfy_balancer.usage import UsageBook, first_of_month
from comfy_shared.access import KeyLimits, Scope
from comfy_shared.clock import utc_now
from comfy_shared.models import Band, TaskRecord
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_shared.usage import TOTAL_FIELD
from comfy_testkit.stack import start_balancer_process

PROMPT = {"1": {"class_type": "KSampler", "inputs": {}}}


async def queue_tasks(redis_url: str, count: int) -> None:
    redis = await connect_redis(redis_url)
    keys = RedisKeys()
    queue = TaskQueue(redis, keys, TaskStore(redis, keys))
    bands = list(Band)
    for start in range(0, count, 500):
        batch = range(start, min(count, start + 500))
        await asyncio.gather(*(
            queue.submit(TaskRecord(id=f"task-{n:06d}", band=bands[n % 3]), PROMPT)
            for n in batch
        ))  # fmt: skip
    await redis.aclose()


async def budgeted_keys(redis_url: str, count: int) -> None:
    """``count`` keys with budgets, each with usage on every day of this month so far."""
    redis = await connect_redis(redis_url)
    keys = RedisKeys()
    store = KeyStore(redis, keys)
    limits = KeyLimits(gpu_seconds_per_day=3600, gpu_seconds_per_month=90_000)
    today = utc_now().date()
    days = [first_of_month(today) + timedelta(days=n) for n in range(today.day)]
    for n in range(count):
        key = await store.create(NewKey(name=f"key-{n:04d}", scopes=[Scope.SUBMIT], limits=limits))
        async with redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hset(keys.usage_key(key.id, day), TOTAL_FIELD, 120.5)
            await pipe.execute()
    await redis.aclose()


async def budgets_on_the_31st(redis_url: str, count: int, calls: int) -> tuple[float, Latencies]:
    """``Budgets.uses`` over ``count`` budgeted keys on 31 January: the first call (30 earlier
    days per key) in ms, then ``calls`` more."""
    redis = await connect_redis(redis_url)
    keys = RedisKeys("bench-31st")
    limits = KeyLimits(gpu_seconds_per_day=3600, gpu_seconds_per_month=90_000)
    api_keys = [ApiKey(id=f"k{n}", name=f"k{n}", tenant=f"t{n}", scopes=[Scope.SUBMIT],
                       limits=limits, created_at=utc_now()) for n in range(count)]  # fmt: skip
    async with redis.pipeline(transaction=False) as pipe:
        for key in api_keys:
            for day in range(1, 32):
                pipe.hset(keys.usage_key(key.id, date(2026, 1, day)), TOTAL_FIELD, 120.5)
        await pipe.execute()
    budgets = Budgets(UsageBook(redis, keys), clock=lambda: datetime(2026, 1, 31, 12, tzinfo=UTC))
    started = time.perf_counter()
    await budgets.uses(api_keys)
    first_ms = (time.perf_counter() - started) * 1000
    samples, wall = [], time.monotonic()
    for _ in range(calls):
        started = time.perf_counter()
        await budgets.uses(api_keys)
        samples.append((time.perf_counter() - started) * 1000)
    await redis.aclose()
    return first_ms, Latencies("Budgets.uses on the 31st", samples, time.monotonic() - wall)


def scrape_ms(http: httpx.Client) -> float:
    started = time.perf_counter()
    http.get("/metrics").raise_for_status()
    return (time.perf_counter() - started) * 1000


def scrapes(http: httpx.Client, name: str, count: int) -> Latencies:
    wall = time.monotonic()
    samples = [scrape_ms(http) for _ in range(count)]
    return Latencies(name, samples, time.monotonic() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()

    with local_redis() as (root, redis):
        balancer = start_balancer_process(
            Path(root) / "logs", redis_url=redis.url, extra_args=list(QUIET_LOGS)
        )
        try:
            with httpx.Client(
                base_url=balancer.url, headers=balancer.auth_headers, timeout=60
            ) as http:
                rows = [scrapes(http, "empty", args.scrapes)]
                asyncio.run(queue_tasks(redis.url, args.tasks))
                rows.append(scrapes(http, f"{args.tasks} tasks queued", args.scrapes))
                asyncio.run(budgeted_keys(redis.url, args.keys))
                first = scrape_ms(http)
                rows.append(scrapes(http, f"+ {args.keys} budgeted keys", args.scrapes))
        finally:
            balancer.stop()
        on_31st = asyncio.run(budgets_on_the_31st(redis.url, args.keys, args.scrapes))
    print_grid(
        ("state", "scrapes", "p50 ms", "p95 ms", "max ms"),
        [(r.name, str(len(r.samples_ms)), f"{r.p50:.1f}", f"{r.p95:.1f}", f"{r.max:.1f}")
         for r in rows],
    )  # fmt: skip
    print(f"first scrape with the keys (day {utc_now().day} of the month): {first:.0f} ms")
    print(
        f"in-process, {args.keys} keys on a 31st: first call {on_31st[0]:.0f} ms, then p50 "
        f"{on_31st[1].p50:.1f} ms, p95 {on_31st[1].p95:.1f} ms"
    )


if __name__ == "__main__":
    main()
