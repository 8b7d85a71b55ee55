"""The gateway's WebSocket across a Redis restart: a socket opened before Redis went away
stays open, and the prompts its client queues afterwards reach it, place in the queue, frames
and end, once the relay and its stream reader are back (real Redis killed and started again on
the same port and data, real balancer, service and emulated ComfyUI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from comfy_shared.comfyui import ProgressText
from comfy_shared.comfyui.events import parse_binary_frame
from comfy_shared.redis_client import connect_redis
from comfy_testkit import graphs
from comfy_testkit.api import get_task, wait_for_status
from comfy_testkit.cluster import Cluster
from comfy_testkit.gateway_ws import ComfyWsClient, submit_prompt
from comfy_testkit.restartable_redis import RestartableRedis
from comfy_testkit.stack import AUTH_HEADERS
from comfy_testkit.waiting import wait_for_condition

TEXT_TYPE = b"\x00\x00\x00\x03"


@pytest.fixture
def redis_url(restartable_redis: RestartableRedis) -> str:
    """Every process of the test uses the Redis the test kills (overrides the testkit's)."""
    return restartable_redis.url


@pytest.fixture
async def tab(
    make_cluster: Callable[..., Cluster],
) -> AsyncIterator[tuple[Cluster, ComfyWsClient]]:
    cluster = make_cluster(["a"], step_time_s=0.02)
    client = await ComfyWsClient.open(cluster.balancer.url, headers=AUTH_HEADERS, client_id="tab")
    await client.wait_for(lambda c: len(c.messages()) >= 1, what="greeting")
    yield cluster, client
    await client.close()


async def test_a_socket_open_across_a_redis_restart_gets_its_later_prompts(
    tab: tuple[Cluster, ComfyWsClient], restartable_redis: RestartableRedis, redis_url: str
) -> None:
    cluster, client = tab
    await cluster.nodes_ready(1)

    restartable_redis.crash()
    await wait_for_condition(
        lambda: _relay_named(cluster.api), timeout_s=15, what="/readyz naming the relay"
    )
    restartable_redis.start_again()
    await wait_for_condition(lambda: _ready(cluster.api), timeout_s=30, what="/readyz 200")
    await cluster.nodes_ready(1)

    redis = await connect_redis(redis_url)
    try:
        running = await _submit(redis, graphs.txt2img("after-restart-busy", steps=3000), "other")
        await wait_for_status(cluster.api, running, {"running"})
        mine = await _submit(redis, graphs.solid_image("after-restart"), "tab")
        await client.wait_for(lambda c: _places(c) != [], what="the waiting prompt's place")
        await cluster.api.delete(f"/api/v1/tasks/{running}")
        await client.wait_prompt_closed(mine, timeout_s=30)
    finally:
        await redis.aclose()

    types = [m["type"] for m in client.of_prompt(mine)]
    assert types[0] == "execution_start"
    assert types[-2:] == ["execution_success", "executing"]
    assert _places(client)[0] == ProgressText(node_id="3", text="In the queue: next to start")
    assert (await get_task(cluster.api, mine))["status"] == "succeeded"


async def _submit(redis: Redis, graph: dict[str, Any], client_id: str) -> str:
    return await submit_prompt(redis, graph, tenant="admin", client_id=client_id)


async def _relay_named(api: httpx.AsyncClient) -> bool:
    response = await api.get("/readyz")
    return response.status_code == 503 and "gateway-relay" in response.json()["loops"]


async def _ready(api: httpx.AsyncClient) -> bool:
    return (await api.get("/readyz")).status_code == 200


def _places(client: ComfyWsClient) -> list[ProgressText]:
    frames = [parse_binary_frame(f) for f in client.binary() if f[:4] == TEXT_TYPE]
    return [f for f in frames if isinstance(f, ProgressText) and f.text.startswith("In the")]
