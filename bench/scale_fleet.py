"""Scale of a fleet: many stand-in nodes and several balancer replicas on one Redis, with a
deep queue (issue 21's scale bench).

One embedded Redis; ``--depth`` tasks queued first through the balancer's own
``TaskQueue.submit`` (``scale.submit_range``); ``--nodes`` stand-in nodes served by one
process (``bench/_standin.py``: health documents with an emulator's node classes, written
every ``--refresh-s`` as a service does; each placement is accepted and marked succeeded at
once, i.e. infinitely fast GPUs, or with ``--run-s`` each node runs its tasks one after the
other for that long, a fleet in its steady state); then, for each of ``--replicas`` (default
1, then 5), that many real balancer processes placing against the same Redis. Each round tops
the queue up to ``--depth``, lets the replicas settle, and measures over ``--window-s``:

- placements per second: the pending queue's decrease (nothing is submitted meanwhile), and
  each replica's share from its ``comfy_dispatch_total``;
- Redis commands per placement (``INFO stats`` total_commands_processed: commands a script
  runs count too), per command (``INFO commandstats``: calls and microseconds), and Redis CPU
  per placement (``INFO cpu`` used_cpu_sys + used_cpu_user);
- CPU seconds per placement of the balancers (all replicas together), of the stand-in
  process and of this one, and how many cores the whole machine was busy (other work on it
  included: the bench shares its cores, so per-placement costs are the figures that carry over).

After each window, with its replicas still running, a ``--profile-s`` sample of every
command Redis ran (``SLOWLOG`` with a threshold of 0: top-level commands and the ones scripts
call, each with its microseconds and client): the scripts and commands by Redis time and per
placement, the processes calling them, the hottest keys, and the dispatch cycles (reads of
the node list) per placement.

    ./dev bench scale_fleet [--nodes 200] [--depth 100000] [--replicas 1 5] [--window-s 20]
        [--settle-s 3] [--profile-s 1] [--refresh-s 2] [--concurrency 64] [--run-s 0]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import importlib
import os
import pkgutil
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import QUIET_LOGS, cpu_seconds, local_redis, print_grid, wait_for_ready_nodes
from _standin import standin_process
from redis.asyncio import Redis
from scale import KEYS, NO_QUEUE_LIMIT, submit_range

import comfy_balancer
import comfy_shared
from comfy_shared.lua import LuaScript
from comfy_shared.redis_client import connect_redis
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_stack.embedded_redis import RedisServer
from comfy_testkit.stack import RunningComponent, start_balancer_process, start_emulator_process

SWEEP_INTERVAL = ("--sweep-interval-s", "1.0")
"""The balancer's default tick (the test kit starts balancers with a faster one)."""
PROFILE_MAX_ENTRIES = 100_000
"""Commands the profile keeps (the newest, if Redis runs more within ``--profile-s``)."""
TARGET_PLACEMENTS_S = 100.0
"""Issue 21's fleet: 1,000 GPUs at one task per 10 s."""
INSIDE_SCRIPTS = "(inside scripts)"


@dataclass(frozen=True)
class Snapshot:
    at_s: float
    pending: int
    total_commands: int
    commands: dict[str, tuple[int, int]]  # command -> (calls, microseconds)
    redis_cpu_s: float
    cpu_s: dict[str, float]  # per process, as cpu_seconds() names them
    own_cpu_s: float
    machine_busy_s: float  # every CPU of the machine, every process


@dataclass(frozen=True)
class Round:
    replicas: int
    wall_s: float
    placed: int
    in_flight: int  # tasks on nodes at the window's end: the sweep reads each, every cycle
    placed_by_replica: list[float]
    total_commands: int
    commands: dict[str, tuple[int, int]]
    redis_cpu_s: float
    balancers_cpu_s: float
    standin_cpu_s: float
    own_cpu_s: float
    machine_busy_s: float

    @property
    def rate(self) -> float:
        return self.placed / self.wall_s

    def per_task_ms(self, cpu_s: float) -> float:
        return cpu_s / self.placed * 1000

    @property
    def others_busy_cores(self) -> float:
        """Cores busy with work outside this bench (other processes on the machine)."""
        ours = self.redis_cpu_s + self.balancers_cpu_s + self.standin_cpu_s + self.own_cpu_s
        return max(0.0, self.machine_busy_s - ours) / self.wall_s


@dataclass
class Profile:
    seconds: float
    placed: int
    entries: int
    full: bool  # Redis ran more commands than the profile keeps: shares only
    calls: Counter[str] = field(default_factory=Counter)  # top-level script or command
    usec: Counter[str] = field(default_factory=Counter)
    callers: dict[str, Counter[str]] = field(default_factory=dict)
    keys: Counter[str] = field(default_factory=Counter)  # every key touched, scripts' too
    fleet_reads: int = 0  # the node list read at the start of each dispatch cycle
    inner_calls: int = 0

    def per_placement(self, count: int) -> str:
        return "-" if self.full or not self.placed else f"{count / self.placed:,.2f}"


@dataclass(frozen=True)
class Results:
    nodes: int
    depth: int
    fill_rate: float
    health_bytes: int
    rounds: list[Round]
    profiles: list[Profile]  # one per round, if any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200, help="stand-in nodes")
    parser.add_argument("--depth", type=int, default=100_000, help="tasks queued in each round")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--window-s", type=float, default=20.0, help="measured per round")
    parser.add_argument("--settle-s", type=float, default=3.0, help="before each window")
    parser.add_argument("--profile-s", type=float, default=1.0, help="0: no profile")
    parser.add_argument("--refresh-s", type=float, default=2.0, help="nodes' health interval")
    parser.add_argument("--concurrency", type=int, default=64, help="submits in flight")
    parser.add_argument(
        "--run-s", type=float, default=0.0, help="each task's run on its node, one at a time"
    )
    args = parser.parse_args()
    results = asyncio.run(_main(args))
    print(
        f"{results.nodes} stand-in nodes (one process, health every {args.refresh_s:g} s, "
        f"{results.health_bytes:,} bytes each), {results.depth:,} tasks queued at each window's "
        f"start (filled at {results.fill_rate:,.0f} submits/s); {args.window_s:g} s windows; "
        + (
            f"each task runs {args.run_s:g} s on its node\n"
            if args.run_s
            else "tasks end at once\n"
        )
    )
    _print_rounds(results.rounds)
    print()
    _print_commands(results.rounds)
    for r, profile in zip(results.rounds, results.profiles, strict=False):
        print(f"\n{r.replicas} replica{'s' if r.replicas > 1 else ''}, ", end="")
        _print_profile(profile)
    print()
    print(_projection(results.rounds[-1]))
    print(_summary(results.rounds))


async def _main(args: argparse.Namespace) -> Results:
    with local_redis() as (root, server):
        redis = await connect_redis(server.url)
        try:
            queue = TaskQueue(redis, KEYS, TaskStore(redis, KEYS))
            started = time.perf_counter()
            await submit_range(queue, 0, args.depth, args.concurrency)
            fill_rate = args.depth / (time.perf_counter() - started)
            with _fleet(root, server, args) as fleet:
                rounds, profiles = await _rounds(redis, queue, fleet, args)
            health = await redis.get(KEYS.node_health("fake-00")) or ""
        finally:
            await redis.aclose()
    return Results(args.nodes, args.depth, fill_rate, len(health), rounds, profiles)


@dataclass
class Fleet:
    root: Path
    server: RedisServer
    standin: psutil.Process
    stack: ExitStack
    replicas: list[RunningComponent] = field(default_factory=list)

    def grow(self, count: int) -> None:
        """Start balancer replicas until ``count`` run (each waits until it answers)."""
        while len(self.replicas) < count:
            name = f"balancer-{len(self.replicas) + 1}"
            replica = start_balancer_process(
                self.root / "logs",
                redis_url=self.server.url,
                name=name,
                extra_args=[*QUIET_LOGS, *NO_QUEUE_LIMIT, *SWEEP_INTERVAL],
            )
            self.stack.callback(replica.stop)
            self.replicas.append(replica)

    def pids(self) -> dict[str, int]:
        pids = {replica.name: replica.process.pid for replica in self.replicas}
        return pids | {"stand-in": self.standin.pid}


@contextmanager
def _fleet(root: Path, server: RedisServer, args: argparse.Namespace) -> Iterator[Fleet]:
    """The stand-in nodes (with an emulator's node classes) and a first balancer that sees
    them all; everything stops on exit, balancers first."""
    with ExitStack() as stack:
        emulator = start_emulator_process(
            root / "logs", root / "emulator-capabilities", extra_args=["--quiet"]
        )
        stack.callback(emulator.stop)
        standin = stack.enter_context(
            standin_process(
                redis_url=server.url,
                prefix=KEYS.prefix,
                nodes=args.nodes,
                object_info_url=f"{emulator.url}/object_info",
                refresh_s=args.refresh_s,
                run_s=args.run_s,
            )
        )
        fleet = Fleet(root, server, psutil.Process(standin.pid), stack)
        fleet.grow(1)
        wait_for_ready_nodes(fleet.replicas[0].url, args.nodes, timeout_s=60)
        yield fleet


async def _rounds(
    redis: Redis, queue: TaskQueue, fleet: Fleet, args: argparse.Namespace
) -> tuple[list[Round], list[Profile]]:
    """For each replica count: top the queue up, settle, measure, profile."""
    rounds, profiles = [], []
    submitted = args.depth
    async with httpx.AsyncClient(timeout=30) as http:
        for count in sorted(set(args.replicas)):
            fleet.grow(count)
            added = args.depth - await queue.length()
            await submit_range(queue, submitted, added, args.concurrency)
            submitted += added
            await asyncio.sleep(args.settle_s)
            rounds.append(await _measure(redis, queue, fleet, http, args))
            if args.profile_s > 0:
                profiles.append(await _profile(redis, queue, fleet, args.profile_s))
    return rounds, profiles


async def _measure(
    redis: Redis, queue: TaskQueue, fleet: Fleet, http: httpx.AsyncClient, args: argparse.Namespace
) -> Round:
    """One window with the replicas ``fleet`` runs now."""
    replicas = fleet.replicas
    dispatched_before = [await _dispatched(http, replica) for replica in replicas]
    before = await _snapshot(redis, queue, fleet.pids())
    await asyncio.sleep(args.window_s)
    after = await _snapshot(redis, queue, fleet.pids())
    dispatched = [
        await _dispatched(http, replica) - earlier
        for replica, earlier in zip(replicas, dispatched_before, strict=True)
    ]
    placed = before.pending - after.pending
    if placed <= 0:
        raise SystemExit(f"{len(replicas)} replicas placed nothing in {args.window_s} s")
    wall_s = after.at_s - before.at_s
    # Each replica's share of the placements, at the queue's count (the scrapes frame the
    # window from outside, so their own counts run a little longer).
    shares = [placed * n / max(1.0, sum(dispatched)) / wall_s for n in dispatched]
    used = {name: after.cpu_s[name] - before.cpu_s.get(name, 0.0) for name in after.cpu_s}
    return Round(
        replicas=len(replicas),
        wall_s=wall_s,
        placed=placed,
        in_flight=await _in_flight(redis, args.nodes),
        placed_by_replica=shares,
        total_commands=after.total_commands - before.total_commands,
        commands={
            name: (
                calls - before.commands.get(name, (0, 0))[0],
                usec - before.commands.get(name, (0, 0))[1],
            )
            for name, (calls, usec) in after.commands.items()
        },
        redis_cpu_s=after.redis_cpu_s - before.redis_cpu_s,
        balancers_cpu_s=sum(used[replica.name] for replica in replicas),
        standin_cpu_s=used["stand-in"],
        own_cpu_s=after.own_cpu_s - before.own_cpu_s,
        machine_busy_s=after.machine_busy_s - before.machine_busy_s,
    )


async def _snapshot(redis: Redis, queue: TaskQueue, pids: Mapping[str, int]) -> Snapshot:
    stats = await redis.info("stats")
    commands = await redis.info("commandstats")
    cpu = await redis.info("cpu")
    return Snapshot(
        at_s=time.perf_counter(),
        pending=await queue.length(),
        total_commands=int(stats["total_commands_processed"]),
        commands={
            name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
            for name, value in commands.items()
        },
        redis_cpu_s=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        cpu_s=cpu_seconds(pids),
        own_cpu_s=time.process_time(),
        machine_busy_s=_machine_busy_s(),
    )


async def _in_flight(redis: Redis, nodes: int) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for index in range(nodes):
            pipe.zcard(KEYS.node_dispatched(f"fake-{index:02d}"))
        return sum(await pipe.execute())


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def _dispatched(http: httpx.AsyncClient, replica: RunningComponent) -> float:
    """Tasks this replica placed so far (its ``comfy_dispatch_total``, every label)."""
    response = await http.get(f"{replica.url}/metrics", headers=replica.auth_headers)
    response.raise_for_status()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("comfy_dispatch_total{")
    )


# profile ----------------------------------------------------------------------------------


async def _profile(redis: Redis, queue: TaskQueue, fleet: Fleet, seconds: float) -> Profile:
    """Every command Redis runs for ``seconds`` (the newest ``PROFILE_MAX_ENTRIES``), and
    the placements meanwhile."""
    await redis.config_set("slowlog-max-len", PROFILE_MAX_ENTRIES)
    await redis.slowlog_reset()
    pending = await queue.length()
    await redis.config_set("slowlog-log-slower-than", 0)
    await asyncio.sleep(seconds)
    await redis.config_set("slowlog-log-slower-than", -1)
    placed = pending - await queue.length()
    # After the sample: connection pools open connections as they need them.
    callers = _clients_by_port(fleet.pids() | {"this bench": os.getpid()}, fleet.server.port)
    entries: list[dict[str, Any]] = await redis.slowlog_get(PROFILE_MAX_ENTRIES)
    await redis.slowlog_reset()
    full = len(entries) >= PROFILE_MAX_ENTRIES
    profile = Profile(seconds, placed, len(entries), full)
    scripts = _script_names()
    for entry in entries:
        _count(profile, entry, scripts, callers)
    return profile


def _count(
    profile: Profile, entry: dict[str, Any], scripts: dict[str, str], callers: dict[int, str]
) -> None:
    words = _text(entry["command"]).split(" ")
    command = words[0].upper()
    if command in ("SLOWLOG", "CONFIG", "ZCARD") and _is_own(entry, callers):
        return  # the profile's own
    if command == "EVALSHA" and len(words) > 2 and words[2].isdigit():
        name = scripts.get(words[1], f"script {words[1][:8]}")
        keys = words[3 : 3 + int(words[2])]
    else:
        name, keys = command, words[1:2]
    profile.keys.update(key for key in keys if not key.startswith("..."))
    address = _text(entry.get("client_address", b""))
    if address.startswith("?"):  # a command a script runs
        profile.inner_calls += 1
        return
    profile.calls[name] += 1
    profile.usec[name] += int(entry["duration"])
    profile.fleet_reads += name == "ZRANGE" and keys == [KEYS.nodes()]
    caller = re.sub(r"-\d+$", "", callers.get(_port(address), "unknown"))  # balancers as one
    profile.callers.setdefault(name, Counter())[caller] += 1


def _is_own(entry: dict[str, Any], callers: dict[int, str]) -> bool:
    return callers.get(_port(_text(entry.get("client_address", b"")))) == "this bench"


def _port(address: str) -> int:
    tail = address.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _text(value: str | bytes) -> str:
    """A slowlog field (redis-py leaves some as bytes whatever the client decodes)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _clients_by_port(pids: Mapping[str, int], redis_port: int) -> dict[int, str]:
    """Local port -> process name, for every connection to Redis of the named processes."""
    by_port = {}
    for name, pid in pids.items():
        for connection in psutil.Process(pid).net_connections(kind="tcp"):
            if connection.raddr and connection.raddr.port == redis_port:
                by_port[connection.laddr.port] = name
    return by_port


@functools.cache
def _script_names() -> dict[str, str]:
    """SHA1 -> ``module.NAME`` of every Lua script the project's shared and balancer modules
    define (imported here for that: the balancer's run in its own processes)."""
    names = {}
    for package in (comfy_shared, comfy_balancer):
        for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(module_info.name)
            for attr, value in vars(module).items():
                if isinstance(value, LuaScript):
                    sha = hashlib.sha1(value.source.encode()).hexdigest()
                    names[sha] = f"{module_info.name.rsplit('.', 1)[-1]}.{attr.strip('_')}"
    return names


# output -----------------------------------------------------------------------------------


def _print_rounds(rounds: list[Round]) -> None:
    header = (
        "replicas",
        "placed/s",
        "per replica",
        "in flight",
        "Redis cmds/task",
        "EVALSHA/task",
        "Redis CPU ms/task",
        "Redis busy",
        "balancers CPU ms/task",
        "balancers cores",
        "stand-in CPU ms/task",
        "machine cores busy (others)",
    )
    rows = [_round_row(r) for r in rounds]
    first = rounds[0]
    rows += [_ratio_row(r, first) for r in rounds[1:]]
    print_grid(header, rows)


def _round_row(r: Round) -> tuple[str, ...]:
    shares = r.placed_by_replica
    return (
        str(r.replicas),
        f"{r.rate:,.0f}",
        f"{min(shares):,.0f}-{max(shares):,.0f}" if len(shares) > 1 else f"{shares[0]:,.0f}",
        f"{r.in_flight:,}",
        f"{r.total_commands / r.placed:,.1f}",
        f"{r.commands.get('evalsha', (0, 0))[0] / r.placed:.2f}",
        f"{r.per_task_ms(r.redis_cpu_s):.3f}",
        f"{r.redis_cpu_s / r.wall_s:.0%}",
        f"{r.per_task_ms(r.balancers_cpu_s):.2f}",
        f"{r.balancers_cpu_s / r.wall_s:.2f}",
        f"{r.per_task_ms(r.standin_cpu_s):.2f}",
        f"{r.machine_busy_s / r.wall_s:.2f} ({r.others_busy_cores:.2f})",
    )


def _ratio_row(r: Round, first: Round) -> tuple[str, ...]:
    def ratio(value: float, against: float) -> str:
        return f"x{value / against:.2f}" if against else "-"

    return (
        f"{r.replicas} / {first.replicas}",
        ratio(r.rate, first.rate),
        ratio(sum(r.placed_by_replica) / r.replicas, sum(first.placed_by_replica) / first.replicas),
        "",
        ratio(r.total_commands / r.placed, first.total_commands / first.placed),
        ratio(
            r.commands.get("evalsha", (0, 0))[0] / r.placed,
            first.commands.get("evalsha", (0, 1))[0] / first.placed,
        ),
        ratio(r.per_task_ms(r.redis_cpu_s), first.per_task_ms(first.redis_cpu_s)),
        ratio(r.redis_cpu_s / r.wall_s, first.redis_cpu_s / first.wall_s),
        ratio(r.per_task_ms(r.balancers_cpu_s), first.per_task_ms(first.balancers_cpu_s)),
        ratio(r.balancers_cpu_s / r.wall_s, first.balancers_cpu_s / first.wall_s),
        ratio(r.per_task_ms(r.standin_cpu_s), first.per_task_ms(first.standin_cpu_s)),
        "",
    )


def _print_commands(rounds: list[Round], top: int = 12) -> None:
    """Redis commands per placement, the costliest (Redis time, scripts included) first."""
    last = rounds[-1]
    ranked = sorted(last.commands, key=lambda name: -last.commands[name][1])[:top]
    header = ("command", *(f"{r.replicas} replicas: calls/task, us/task" for r in rounds))
    rows = [
        (
            name.upper(),
            *(
                f"{r.commands.get(name, (0, 0))[0] / r.placed:,.2f}, "
                f"{r.commands.get(name, (0, 0))[1] / r.placed:,.1f}"
                for r in rounds
            ),
        )
        for name in ranked
    ]
    print_grid(header, rows)


def _print_profile(profile: Profile, top: int = 12) -> None:
    total_usec = sum(profile.usec.values())
    print(
        f"profile: {profile.entries:,} commands in {profile.seconds:g} s"
        f"{' (the newest only: more ran)' if profile.full else ''}, "
        f"{profile.inner_calls:,} of them run by scripts; {profile.placed:,} placements; "
        f"fleet reads (dispatch cycles) per placement: {profile.per_placement(profile.fleet_reads)}"
    )
    header = ("top-level call", "per placement", "share of Redis time", "us/call", "callers")
    rows = [
        (
            name,
            profile.per_placement(profile.calls[name]),
            f"{profile.usec[name] / total_usec:.1%}",
            f"{profile.usec[name] / profile.calls[name]:.1f}",
            ", ".join(
                f"{caller} {n / profile.calls[name]:.0%}"
                for caller, n in _top(profile.callers[name], 3)
            ),
        )
        for name, _ in profile.usec.most_common(top)
    ]
    print_grid(header, rows)
    print()
    touched = sum(profile.keys.values())
    key_rows = [
        (key, profile.per_placement(count), f"{count / touched:.1%}")
        for key, count in profile.keys.most_common(8)
    ]
    print_grid(("hottest keys", "touches per placement", "share of touches"), key_rows)


def _top(counter: Counter[str], count: int) -> list[tuple[str, int]]:
    return counter.most_common(count)


def _projection(r: Round) -> str:
    """The last round's per-placement costs at issue 21's rate (linear: per-cycle costs that
    grow with the node count are not in it)."""
    per_s = TARGET_PLACEMENTS_S
    return (
        f"at {per_s:.0f} placements/s, from the {r.replicas}-replica costs: "
        f"{r.total_commands / r.placed * per_s:,.0f} Redis commands/s, Redis "
        f"{r.per_task_ms(r.redis_cpu_s) * per_s / 1000:.0%} of a core, balancers "
        f"{r.per_task_ms(r.balancers_cpu_s) * per_s / 1000:.2f} cores, services' Redis writes "
        f"in the stand-in {r.per_task_ms(r.standin_cpu_s) * per_s / 1000:.2f} cores"
    )


def _summary(rounds: list[Round]) -> str:
    described = [
        f"{r.replicas} replica{'s' if r.replicas > 1 else ''} {r.rate:,.0f} placed/s at "
        f"{r.total_commands / r.placed:,.0f} Redis commands, "
        f"{r.per_task_ms(r.redis_cpu_s):.2f} ms Redis CPU and "
        f"{r.per_task_ms(r.balancers_cpu_s):.2f} ms balancer CPU per task"
        for r in rounds
    ]
    return "summary: " + "; ".join(described)


if __name__ == "__main__":
    main()
