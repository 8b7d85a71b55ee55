"""The gateway's WebSocket under many clients: how long a ComfyUI message takes from the node
to its clients, and what a connection costs the balancer.

Starts Redis, ``--nodes`` emulated ComfyUIs with their comfy-services and one balancer, each
its own process, plus a client process (``bench/_ws_holder.py``) that opens ``--sockets``
WebSocket clients as the ComfyUI frontend does: ``--tenants`` users (one API key each), every
client id with ``--sockets-per-client`` sockets (tabs). Each round queues ``--prompts`` gateway
prompts at once (a txt2img graph of ``--steps`` sampler steps of ``--step-time`` s, the
emulator reporting ``progress`` and ``progress_state`` per step), one per client id taken in
turn, and waits until all have ended; ``--nodes`` of them run at a time, the others wait in
the queue. Every client is connected meanwhile; each gets ``status`` frames of its user and
the frames of its own prompts. With ``--nodes 0`` this process plays the nodes instead
(``bench/_standin_frames.py``: the frames a node's service writes for that graph, every
prompt at once), so the gateway is measured with no node process competing for the CPU.

Delay: for each message a node's service wrote to a prompt's frames stream as it received it
(field ``r``, its wall clock on receipt), the time until each socket of the prompt's client
got it (same clock, one machine); "in balancer" is the part from the frame's entry in Redis
(its id is Redis' clock) to the client. Memory: the balancer's resident set before and after the
sockets opened (idle), per socket. Prints a table and a ``summary:`` line.

    ./dev bench ws_fanout [--sockets 500] [--prompts 50] [--nodes 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

import httpx
import psutil
from _common import (
    API,
    TERMINAL,
    LocalCluster,
    cpu_seconds,
    local_cluster,
    percentile,
    print_grid,
)
from _standin_frames import run_prompt
from _ws_holder import Collected, Opened, Socket, hold_sockets
from redis.asyncio import Redis

from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_hub import stream_order
from comfy_shared.task_store import TaskStore
from comfy_testkit.gateway_ws import submit_prompt
from comfy_testkit.graphs import txt2img
from comfy_testkit.stack import AUTH_HEADERS

KEYS = RedisKeys()
DRAIN_TIMEOUT_S = 300.0
TARGET_P99_MS = 50.0
HELD = frozenset({"execution_success", "execution_error", "execution_interrupted"})
"""The node's ends: the relay holds them until the task's record is terminal, on purpose."""


@dataclass
class Round:
    prompts: int = 0
    seconds: float = 0.0
    delays_ms: list[float] = field(default_factory=list)
    relay_ms: list[float] = field(default_factory=list)
    """The balancer's part of each delay: from the frame's entry in Redis to the client."""
    frames_to_clients: int = 0
    statuses: int = 0
    closed_early: int = 0
    balancer_cpu_s: float = 0.0
    stack_cpu_s: float = 0.0
    """CPU seconds of every process of the bench (Redis, nodes, balancer, clients)."""
    clients_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    load: float = 0.0
    """The machine's load average over the last minute, at the round's end."""
    balancer_rss_mb: float = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=500, help="WebSocket clients")
    parser.add_argument("--sockets-per-client", type=int, default=1, help="tabs per client id")
    parser.add_argument("--tenants", type=int, default=10, help="users (API keys)")
    parser.add_argument("--prompts", type=int, default=50, help="prompts queued per round")
    parser.add_argument("--nodes", type=int, default=10, help="emulated ComfyUIs")
    parser.add_argument("--steps", type=int, default=40, help="sampler steps per prompt")
    parser.add_argument("--step-time", type=float, default=0.05, help="seconds per step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--no-compression", action="store_true", help="clients refuse permessage-deflate"
    )
    args = parser.parse_args()
    asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> None:
    spawn = multiprocessing.get_context("spawn")
    balancer_args = ["--max-streams", str(4 * args.prompts + 100)]
    with local_cluster(
        args.nodes, step_time_s=args.step_time, balancer_args=balancer_args
    ) as cluster:
        balancer = psutil.Process(cluster.balancer.process.pid)
        async with httpx.AsyncClient(
            base_url=cluster.balancer.url, headers=AUTH_HEADERS, timeout=30
        ) as api:
            sockets = await _sockets(api, args)
        ours, theirs = spawn.Pipe()
        holder = spawn.Process(
            target=hold_sockets,
            args=(theirs, cluster.balancer.url, sockets, not args.no_compression),
            daemon=True,
        )
        holder.start()
        redis = await connect_redis(cluster.redis.url)
        try:
            rss_before = balancer.memory_info().rss
            ours.send("open")
            opened = cast(Opened, await asyncio.to_thread(ours.recv))
            rss_idle = await _settled_rss(balancer)
            rounds = [
                await _round(cluster, redis, ours, holder.pid or 0, sockets, balancer, args)
                for _ in range(args.rounds)
            ]
        finally:
            ours.send("exit")
            holder.join(timeout=30)
            await redis.aclose()
    _print(args, opened, rss_before, rss_idle, rounds)


async def _sockets(api: httpx.AsyncClient, args: argparse.Namespace) -> list[Socket]:
    """``--sockets`` sockets: the users' keys, and client ids spread over the users."""
    keys: list[tuple[str, str]] = []
    for tenant in range(args.tenants):
        created = await api.post(f"{API}/keys", json={"name": f"user-{tenant}"})
        created.raise_for_status()
        keys.append((created.json()["tenant"], created.json()["key"]))
    clients = args.sockets // args.sockets_per_client
    return [
        Socket(
            tenant=keys[client % args.tenants][0],
            tenant_key=keys[client % args.tenants][1],
            client_id=f"client-{client:04d}",
        )
        for client in range(clients)
        for _ in range(args.sockets_per_client)
    ]


async def _settled_rss(process: psutil.Process) -> int:
    """The resident set once it stopped growing (the last handshakes done)."""
    last = process.memory_info().rss
    for _ in range(20):
        await asyncio.sleep(0.25)
        now = process.memory_info().rss
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


async def _round(
    cluster: LocalCluster,
    redis: Redis,
    holder: Connection,
    holder_pid: int,
    sockets: list[Socket],
    balancer: psutil.Process,
    args: argparse.Namespace,
) -> Round:
    holder.send("collect")
    await asyncio.to_thread(holder.recv)  # forget what came before the round
    tenant_of = {socket.client_id: socket.tenant for socket in sockets}
    client_ids = sorted(tenant_of)
    pids = cluster.pids() | {"clients": holder_pid}
    cpu_before = sum(balancer.cpu_times()[:2])
    before = cpu_seconds(pids)
    started = time.monotonic()
    owners: dict[str, str] = {}
    for index in range(args.prompts):
        client_id = client_ids[index * len(client_ids) // args.prompts]
        # A seed of its own, or the node's ComfyUI would serve the sampler from its cache.
        graph = txt2img(f"ws-{uuid.uuid4().hex[:8]}", steps=args.steps, seed=secrets.randbits(48))
        prompt = await submit_prompt(redis, graph, tenant=tenant_of[client_id], client_id=client_id)
        owners[prompt] = client_id
    if not cluster.nodes:  # this process plays the nodes: every prompt runs at once
        store = TaskStore(redis, KEYS)
        steps, step_time_s = args.steps, args.step_time
        await asyncio.gather(*(run_prompt(store, p, steps, step_time_s) for p in owners))
    await _all_ended(cluster, list(owners))
    seconds = time.monotonic() - started
    after = cpu_seconds(pids)
    result = Round(
        prompts=len(owners),
        seconds=seconds,
        balancer_cpu_s=sum(balancer.cpu_times()[:2]) - cpu_before,
        stack_cpu_s=sum(after.values()) - sum(before.values()),
        clients_cpu_s=after["clients"] - before["clients"],
        redis_cpu_s=after["redis"] - before["redis"],
        load=os.getloadavg()[0],
        balancer_rss_mb=balancer.memory_info().rss / 2**20,
    )
    await asyncio.sleep(1.0)  # the last frames on their way to the clients
    holder.send("collect")
    collected = cast(Collected, await asyncio.to_thread(holder.recv))
    await _measure(redis, owners, collected, result)
    return result


async def _all_ended(cluster: LocalCluster, prompts: list[str]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    async with httpx.AsyncClient(
        base_url=cluster.balancer.url, headers=AUTH_HEADERS, timeout=30
    ) as api:
        for prompt in prompts:
            while (await api.get(f"{API}/tasks/{prompt}")).json()["status"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise SystemExit(f"prompt {prompt} not finished after {DRAIN_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.1)


async def _measure(
    redis: Redis, owners: dict[str, str], collected: Collected, result: Round
) -> None:
    """Delays of the messages relayed as the node wrote them (all but the ends, which the
    relay holds for the record on purpose, and ``executed``, which it renames)."""
    result.closed_early = collected.closed_early
    for texts in collected.texts.values():
        result.frames_to_clients += len(texts)
        result.statuses += sum('"type": "status"' in text for _, text in texts)
    for prompt, client_id in owners.items():
        arrivals: dict[str, list[float]] = {}
        for at, text in collected.texts.get(client_id, []):
            arrivals.setdefault(text, []).append(at)
        entries = cast(
            "list[tuple[str, dict[str, str]]]", await redis.xrange(KEYS.task_frames(prompt))
        )
        for entry_id, fields in entries:
            if fields.get("k") != "m" or json.loads(fields["d"])["type"] in HELD:
                continue
            for at in arrivals.pop(fields["d"], []):
                result.delays_ms.append(at * 1000 - float(fields["r"]))
                result.relay_ms.append(at * 1000 - stream_order(entry_id)[0])


def _print(
    args: argparse.Namespace, opened: Opened, rss_before: int, rss_idle: int, rounds: list[Round]
) -> None:
    per_socket_kb = (rss_idle - rss_before) / max(1, opened.sockets) / 1024
    print(
        f"{opened.sockets} sockets of {args.sockets // args.sockets_per_client} client ids, "
        f"{args.tenants} users, opened in {opened.seconds:.1f} s ({opened.refused} refused); "
        f"{args.nodes} nodes; {args.prompts} prompts a round, {args.steps} steps of "
        f"{args.step_time * 1000:.0f} ms; compression {'off' if args.no_compression else 'on'}"
    )
    print(
        f"balancer RSS {rss_before / 2**20:.1f} MB -> {rss_idle / 2**20:.1f} MB with the "
        f"sockets idle: {per_socket_kb:.1f} kB per socket"
    )
    print()
    header = (
        "round",
        "prompts",
        "s",
        "frames to clients",
        "statuses",
        "delay p50 ms",
        "p99 ms",
        "max ms",
        "in balancer p50 ms",
        "p99 ms",
        "balancer CPU s",
        "clients CPU s",
        "Redis CPU s",
        "all CPU s",
        "load",
        "RSS MB",
    )
    rows = [
        (
            str(number),
            str(r.prompts),
            f"{r.seconds:.1f}",
            str(r.frames_to_clients),
            str(r.statuses),
            f"{percentile(r.delays_ms, 50):.1f}",
            f"{percentile(r.delays_ms, 99):.1f}",
            f"{percentile(r.delays_ms, 100):.1f}",
            f"{percentile(r.relay_ms, 50):.1f}",
            f"{percentile(r.relay_ms, 99):.1f}",
            f"{r.balancer_cpu_s:.1f}",
            f"{r.clients_cpu_s:.1f}",
            f"{r.redis_cpu_s:.1f}",
            f"{r.stack_cpu_s:.1f}",
            f"{r.load:.1f}",
            f"{r.balancer_rss_mb:.0f}",
        )
        for number, r in enumerate(rounds, 1)
    ]
    print_grid(header, rows)
    delays = [d for r in rounds for d in r.delays_ms]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    verdict = "met" if p99 < TARGET_P99_MS else "missed"
    print(
        f"summary: {opened.sockets} sockets, {sum(r.prompts for r in rounds)} prompts: "
        f"node->client delay p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(delays)} "
        f"deliveries (target p99 < {TARGET_P99_MS:.0f} ms: {verdict}); "
        f"{per_socket_kb:.1f} kB per idle socket; "
        f"{sum(r.closed_early for r in rounds)} sockets closed early"
    )


if __name__ == "__main__":
    main()
