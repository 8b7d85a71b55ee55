"""A node that turns a placement away as overloaded: the task waits, no attempt is spent."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web
from redis.asyncio import Redis

from comfy_shared.models import Capabilities, ComfyStatus, NodeHealth
from comfy_shared.redis_keys import RedisKeys
from comfy_stack.ports import free_port
from comfy_testkit import graphs
from comfy_testkit.api import submit
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.stack import AUTH_HEADERS
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()


class OverloadedOnce:
    """A node's API that answers its first placement 503 overloaded, then accepts."""

    def __init__(self) -> None:
        self.placements: list[tuple[float, dict[str, Any]]] = []
        self.port = free_port()

    async def generate(self, request: web.Request) -> web.Response:
        self.placements.append((asyncio.get_running_loop().time(), await request.json()))
        if len(self.placements) == 1:
            body = {"detail": "busy", "code": "overloaded", "type": "service"}
            return web.json_response(body, status=503, headers={"Retry-After": "1"})
        return web.json_response({"status": "queued"}, status=202)


@pytest.fixture
async def node() -> AsyncIterator[OverloadedOnce]:
    fake = OverloadedOnce()
    app = web.Application()
    app.router.add_post("/api/v1/generate", fake.generate)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", fake.port).start()
    yield fake
    await runner.cleanup()


async def publish_health(redis: Redis, node: OverloadedOnce, graph: dict[str, Any]) -> None:
    health = NodeHealth(
        node_id="busy-node",
        url=f"http://127.0.0.1:{node.port}",
        version="test",
        started_at=datetime.now(UTC),
        comfyui=ComfyStatus(reachable=True),
        cpu_percent=0,
        ram_used_bytes=0,
        ram_total_bytes=1,
        capabilities=Capabilities(node_classes=sorted({n["class_type"] for n in graph.values()})),
    )
    await redis.set(KEYS.node_health("busy-node"), health.model_dump_json(), ex=60)
    await redis.zadd(KEYS.nodes(), {"busy-node": 0})


async def test_an_overloaded_node_costs_the_task_no_attempt_and_gets_a_pause(
    start_balancer: BalancerFactory, redis: Redis, node: OverloadedOnce
) -> None:
    graph = graphs.solid_image("overloaded")
    await publish_health(redis, node, graph)
    balancer = start_balancer()
    async with httpx.AsyncClient(base_url=balancer.url, timeout=10, headers=AUTH_HEADERS) as api:
        task_id = (await submit(api, graph))["id"]

        async def placed_twice() -> bool:
            return len(node.placements) == 2

        await wait_for_condition(placed_twice, what="a second placement")
        task = (await api.get(f"/api/v1/tasks/{task_id}")).json()

    (first_at, first), (second_at, second) = node.placements
    assert first["task_id"] == second["task_id"] == task_id
    assert second_at - first_at >= 0.9  # the node was left alone for its pause
    assert task["status"] == "dispatched"
    assert task["attempts"] == 1
    assert [attempt["number"] for attempt in task["attempt_log"]] == [1]
    assert await redis.zcard(KEYS.node_failures("busy-node")) == 0
