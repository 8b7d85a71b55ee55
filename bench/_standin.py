"""Stand-in comfy-services for balancer benchmarks: fake nodes with infinitely fast GPUs.

One aiohttp server answers for any number of fake nodes (the node is the path's first part);
their health documents are written straight into Redis. Used in-process by ``scale`` and, as
a process of its own (:func:`standin_process`), by ``balancer_throughput`` and ``scale_fleet``
(so the balancer's figures are its own, without ComfyUI and comfy-service work on the same
cores).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
from aiohttp import web
from redis.asyncio import Redis

from comfy_shared.clock import now_ms, utc_now
from comfy_shared.comfyui.models import NodeInfo, model_files
from comfy_shared.lifecycle import Ended, current_attempt
from comfy_shared.models import Capabilities, ComfyStatus, NodeHealth
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.signals import NODE_CHANGED, Signals
from comfy_shared.task_store import TaskStore
from comfy_stack.ports import free_port

REFRESH_S = 1.0
"""How often the stand-in process writes its nodes' health again (``--refresh-s``)."""


class FakeService:
    """One HTTP server standing in for every fake node (the node is the path's first part):
    accepts a placement and marks the task succeeded, as a service would when ComfyUI is
    done, so the slot frees and the balancer is signalled. At once by default (infinitely
    fast GPUs); with ``run_s``, each node runs its tasks one after the other, each for that
    long (a fleet in its steady state)."""

    def __init__(self, store: TaskStore, port: int = 0, run_s: float = 0.0) -> None:
        self._store = store
        self._run_s = run_s
        self._free_at: dict[str, float] = {}  # per node, when its GPU is done with its tasks
        self._writes: set[asyncio.Task[None]] = set()
        self.finished = 0
        self.expected = 0
        self.all_done = asyncio.Event()
        self.port = port or free_port()

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/{node}/api/v1/generate", self._generate)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    def url(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/{node_id}"

    def expect(self, count: int) -> None:
        self.finished, self.expected = 0, count
        self.all_done.clear()

    async def _generate(self, request: web.Request) -> web.Response:
        task_id = str((await request.json())["task_id"])
        write = asyncio.create_task(self._finish(task_id, self._ends_in_s(request)))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        return web.json_response({"id": task_id, "status": "queued"}, status=202)

    def _ends_in_s(self, request: web.Request) -> float:
        """Seconds until the task just accepted ends: after the node's earlier tasks."""
        if not self._run_s:
            return 0.0
        node, now = request.match_info["node"], asyncio.get_running_loop().time()
        ends_at = self._free_at[node] = max(now, self._free_at.get(node, now)) + self._run_s
        return ends_at - now

    async def _finish(self, task_id: str, after_s: float) -> None:
        if after_s:
            await asyncio.sleep(after_s)
        record = await self._store.get(task_id)
        attempt = current_attempt(record)
        assert attempt is not None
        await self._store.apply(task_id, Ended(attempt))
        self.finished += 1
        if self.finished >= self.expected:
            self.all_done.set()


async def publish_nodes(
    redis: Redis,
    keys: RedisKeys,
    fake: FakeService,
    count: int,
    capabilities: Capabilities,
    ttl_s: int = 600,
    *,
    signal: bool = True,
) -> None:
    """What ``count`` services would publish, then (``signal``) the signal that wakes the
    balancers at once, as for nodes that just appeared."""
    async with redis.pipeline(transaction=False) as pipe:
        for index in range(count):
            node_id = f"fake-{index:02d}"
            health = NodeHealth(
                node_id=node_id,
                url=fake.url(node_id),
                version="bench",
                started_at=utc_now(),
                comfyui=ComfyStatus(
                    reachable=True,
                    version="0.8.0",
                    device="cuda:0 NVIDIA GeForce RTX 4090",
                    vram_total_bytes=24 * 2**30,
                    vram_free_bytes=20 * 2**30,
                ),
                cpu_percent=5.0,
                ram_used_bytes=8 * 2**30,
                ram_total_bytes=64 * 2**30,
                capabilities=capabilities,
            )
            pipe.set(keys.node_health(node_id), health.model_dump_json(), ex=ttl_s)
            pipe.zadd(keys.nodes(), {node_id: now_ms()})
        await pipe.execute()
    if signal:
        await Signals(redis, keys).publish(NODE_CHANGED, "bench")


def capabilities_of(object_info_url: str) -> Capabilities:
    """Node classes and model files as a service reads them from its ComfyUI."""
    body = cast(dict[str, Any], httpx.get(object_info_url, timeout=30).json())
    info = {name: NodeInfo.model_validate(value) for name, value in body.items()}
    return Capabilities(node_classes=sorted(info), models=model_files(info))


async def _serve(args: argparse.Namespace) -> None:
    keys = RedisKeys(args.prefix)
    redis = await connect_redis(args.redis_url)
    fake = FakeService(TaskStore(redis, keys), port=args.port, run_s=args.run_s)
    runner = await fake.start()
    capabilities = capabilities_of(args.object_info_url)
    ttl_s = max(10, round(5 * args.refresh_s))
    try:
        await publish_nodes(redis, keys, fake, args.nodes, capabilities, ttl_s)
        while True:  # refreshed like a service's health (no signal), until stopped
            await asyncio.sleep(args.refresh_s)
            await publish_nodes(redis, keys, fake, args.nodes, capabilities, ttl_s, signal=False)
    finally:
        await runner.cleanup()


@contextmanager
def standin_process(
    *,
    redis_url: str,
    prefix: str,
    nodes: int,
    object_info_url: str,
    refresh_s: float = REFRESH_S,
    run_s: float = 0.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """This module as a process of its own serving ``nodes`` fake nodes (``fake-00``...),
    stopped on exit. The caller waits until the balancer sees them."""
    # fmt: off
    process = subprocess.Popen(
        [
            sys.executable, str(Path(__file__)),
            "--redis-url", redis_url, "--prefix", prefix, "--nodes", str(nodes),
            "--port", str(free_port()), "--object-info-url", object_info_url,
            "--refresh-s", str(refresh_s), "--run-s", str(run_s),
        ],
        stdout=subprocess.DEVNULL,
    )
    # fmt: on
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True, help="Redis key prefix of the balancer")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--object-info-url", required=True, help="a ComfyUI's /object_info")
    parser.add_argument("--refresh-s", type=float, default=REFRESH_S, help="health interval")
    parser.add_argument("--run-s", type=float, default=0.0, help="each task's run (0: none)")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
