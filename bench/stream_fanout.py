"""Submit latency and dispatch delay of one balancer with no open event streams and with
many (1,000 by default), side by side in one run.

Starts Redis, 2 emulated ComfyUIs (instant sampler), 2 comfy-services and 1 balancer, each
its own process, plus a load generator process and a stream holder process
(``bench/_sse_holder.py``: raw asyncio connections, one per stream, each following a task
that stays queued outside the queue, so the streams are idle watchers that get heartbeats).
Each round runs two phases at the same rate, open loop: no streams, then ``--streams`` open
streams. In each phase the generator submits an instant graph through the balancer
(``POST /api/v1/generate``); this process waits until every task has run and then reads each
task's record for its submit-to-dispatched delay (``attempt_log[0].dispatched_at`` minus
``created_at``). Also counts Redis client connections during each phase: the streams share
one reader connection in the balancer. Prints a table and a summary.

    ./dev bench stream_fanout [--streams 1000] [--rate 20] [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection

import httpx
import redis as redis_sync
from _common import API, TERMINAL, LocalCluster, local_cluster, percentile, print_grid
from _loadgen import LoadPlan, LoadResult, run_load
from _sse_holder import Closed, Opened, hold_streams

from comfy_testkit.stack import AUTH_HEADERS

DRAIN_TIMEOUT_S = 120.0


@dataclass
class Phase:
    streams: int
    submit_ms: list[float] = field(default_factory=list)
    dispatch_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    redis_clients: list[int] = field(default_factory=list)
    opened: list[Opened] = field(default_factory=list)
    closed: list[Closed] = field(default_factory=list)

    def add(self, load: LoadResult, dispatch_ms: list[float], redis_clients: int) -> None:
        self.submit_ms.extend(load.latencies_ms)
        self.dispatch_ms.extend(dispatch_ms)
        self.sent += load.sent
        self.redis_clients.append(redis_clients)
        for error, count in load.errors.items():
            self.errors[error] = self.errors.get(error, 0) + count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="open streams, second phase")
    parser.add_argument("--rate", type=float, default=20, help="submits per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of submits a phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both phases")
    args = parser.parse_args()

    spawn = multiprocessing.get_context("spawn")
    balancer_args = ["--max-streams", str(args.streams + 100)]
    with (
        local_cluster(2, balancer_args=balancer_args) as cluster,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as generator,
        httpx.Client(timeout=30, headers=AUTH_HEADERS) as http,
        redis_sync.Redis.from_url(cluster.redis.url) as redis,
    ):
        ours, theirs = spawn.Pipe()
        holder = spawn.Process(
            target=hold_streams,
            args=(theirs, cluster.balancer.url, cluster.redis.url, args.streams),
            daemon=True,
        )
        holder.start()
        phases = [Phase(0), Phase(args.streams)]
        try:
            for _ in range(args.rounds):
                for phase in phases:
                    _run_phase(phase, ours, generator, http, redis, cluster, args)
        finally:
            ours.send("exit")
            holder.join(timeout=30)
    _print(phases, args)


def _run_phase(
    phase: Phase,
    holder: Connection,
    generator: ProcessPoolExecutor,
    http: httpx.Client,
    redis: redis_sync.Redis,
    cluster: LocalCluster,
    args: argparse.Namespace,
) -> None:
    if phase.streams:
        holder.send("open")
        phase.opened.append(holder.recv())
    plan = LoadPlan(cluster.balancer.url, "api-submit", args.rate, args.duration)
    load = generator.submit(run_load, plan).result()
    clients = len(redis.client_list())
    dispatch_ms = _dispatch_delays(http, cluster.balancer.url, load.ids)
    if phase.streams:
        holder.send("close")
        phase.closed.append(holder.recv())
    phase.add(load, dispatch_ms, clients)


def _dispatch_delays(http: httpx.Client, url: str, ids: list[str]) -> list[float]:
    """Once every task ran: each one's time from accepted to placed on a node."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    delays = []
    for task_id in ids:
        while (task := http.get(f"{url}{API}/tasks/{task_id}").json())["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise SystemExit(f"task {task_id} not finished after {DRAIN_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        created = datetime.fromisoformat(task["created_at"])
        dispatched = datetime.fromisoformat(task["attempt_log"][0]["dispatched_at"])
        delays.append((dispatched - created).total_seconds() * 1000)
    return delays


def _print(phases: list[Phase], args: argparse.Namespace) -> None:
    none, many = phases
    rounds = f"{args.rounds} x {args.duration:.0f} s per phase"
    print(f"open loop at {args.rate:.0f} submits/s, {rounds}; Redis clients of all processes")
    print()
    header = (
        "open streams",
        "submits",
        "errors",
        "submit p50 ms",
        "p99 ms",
        "max ms",
        "dispatch p50 ms",
        "p99 ms",
        "redis clients",
    )
    rows = [_row(phase) for phase in phases]
    rows.append(
        (
            "ratio",
            "",
            "",
            _ratio(many.submit_ms, none.submit_ms, 50),
            _ratio(many.submit_ms, none.submit_ms, 99),
            _ratio(many.submit_ms, none.submit_ms, 100),
            _ratio(many.dispatch_ms, none.dispatch_ms, 50),
            _ratio(many.dispatch_ms, none.dispatch_ms, 99),
            "",
        )
    )
    print_grid(header, rows)
    for phase in phases:
        if phase.errors:
            print(f"  errors with {phase.streams} streams: {phase.errors}")
    print()
    for opened, closed in zip(many.opened, many.closed, strict=True):
        print(
            f"  held {opened.streams} streams (opened in {opened.seconds:.1f} s, refused "
            f"{opened.refused or 'none'}); {closed.frames} frames read, "
            f"{closed.ended_early} ended early, holder CPU {closed.cpu_s:.1f} s"
        )
    print(_summary(none, many))


def _row(phase: Phase) -> tuple[str, ...]:
    return (
        str(phase.streams),
        str(phase.sent),
        str(sum(phase.errors.values())),
        f"{percentile(phase.submit_ms, 50):.2f}",
        f"{percentile(phase.submit_ms, 99):.2f}",
        f"{percentile(phase.submit_ms, 100):.2f}",
        f"{percentile(phase.dispatch_ms, 50):.2f}",
        f"{percentile(phase.dispatch_ms, 99):.2f}",
        "/".join(str(n) for n in phase.redis_clients),
    )


def _ratio(samples: list[float], base: list[float], pct: float) -> str:
    return f"x{percentile(samples, pct) / percentile(base, pct):.2f}"


def _summary(none: Phase, many: Phase) -> str:
    errors = sum(none.errors.values()) + sum(many.errors.values())
    held = min((opened.streams for opened in many.opened), default=0)
    return (
        f"summary: with {held} open event streams one balancer answers submits in p50/p99 "
        f"{percentile(many.submit_ms, 50):.2f}/{percentile(many.submit_ms, 99):.2f} ms "
        f"(without: {percentile(none.submit_ms, 50):.2f}/{percentile(none.submit_ms, 99):.2f} "
        f"ms, ratio {_ratio(many.submit_ms, none.submit_ms, 50)}/"
        f"{_ratio(many.submit_ms, none.submit_ms, 99)}) and places tasks in p50/p99 "
        f"{percentile(many.dispatch_ms, 50):.2f}/{percentile(many.dispatch_ms, 99):.2f} ms "
        f"(without: {percentile(none.dispatch_ms, 50):.2f}/"
        f"{percentile(none.dispatch_ms, 99):.2f} ms); {errors} errors; Redis connections "
        f"{max(none.redis_clients)} without streams, {max(many.redis_clients)} with"
    )


if __name__ == "__main__":
    main()
