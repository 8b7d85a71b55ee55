"""Draining a node for maintenance, with real services, emulators, Redis and balancers."""

import asyncio
import uuid
from typing import Any

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_for_status, wait_until_finished
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.stack import AUTH_HEADERS
from comfy_testkit.waiting import wait_for_condition


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def nodes_ran(api: httpx.AsyncClient, count: int) -> set[str]:
    """The nodes ``count`` short tasks, submitted together, ran on."""
    ids = [
        (await submit(api, graphs.txt2img(f"d-{fresh()}", steps=20, seed=i)))["id"]
        for i in range(count)
    ]
    tasks = await asyncio.gather(*(wait_until_finished(api, i, timeout_s=60) for i in ids))
    assert {task["status"] for task in tasks} == {"succeeded"}
    return {task["node_id"] for task in tasks}


async def wait_for_state(api: httpx.AsyncClient, node_id: str, state: str) -> None:
    async def reached() -> bool:
        nodes = (await api.get("/api/v1/nodes")).json()
        return any(node["node_id"] == node_id and node["state"] == state for node in nodes)

    await wait_for_condition(reached, timeout_s=20, what=f"node {node_id} {state}")


async def post(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await api.post(path)
    assert response.status_code == 200, response.text
    node: dict[str, Any] = response.json()
    return node


async def test_a_drained_node_finishes_its_task_takes_no_new_one_and_stays_drained_across_restart(
    cluster: Cluster, start_balancer: BalancerFactory
) -> None:
    await cluster.nodes_ready(2)
    long = await submit(cluster.api, graphs.txt2img(f"long-{fresh()}", steps=5000))
    running = await wait_for_status(cluster.api, long["id"], {"running"})
    busy = running["node_id"]
    (other,) = {"a", "b"} - {busy}

    drained = await post(cluster.api, f"/api/v1/nodes/{busy}/drain")

    assert (drained["node_id"], drained["state"], drained["in_flight"]) == (busy, "draining", 1)
    assert drained["drained"] is True
    assert await nodes_ran(cluster.api, 4) == {other}
    await wait_for_state(cluster.api, busy, "draining")

    cluster.balancer.kill()  # the mark is in Redis: a new balancer honours it
    replacement = start_balancer("balancer-2")
    async with httpx.AsyncClient(base_url=replacement.url, timeout=15, headers=AUTH_HEADERS) as api:
        await wait_for_state(api, busy, "draining")
        assert await nodes_ran(api, 4) == {other}
        assert (await api.delete(f"/api/v1/tasks/{long['id']}")).status_code == 200
        await wait_for_state(api, busy, "drained")

        undrained = await post(api, f"/api/v1/nodes/{busy}/undrain")

        assert (undrained["state"], undrained["drained"]) == ("ready", False)
        assert busy in await nodes_ran(api, 8)


async def test_only_an_admin_drains_and_only_a_known_node(
    cluster: Cluster, keys: KeyClients
) -> None:
    await cluster.nodes_ready(2)
    member = await keys.make("member")

    refused = await member.post("/api/v1/nodes/a/drain")
    unknown = await cluster.api.post("/api/v1/nodes/zz/drain")
    malformed = await cluster.api.post("/api/v1/nodes/a:b/undrain")

    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "node_not_found"
    assert malformed.status_code == 422
    nodes = (await cluster.api.get("/api/v1/nodes")).json()
    assert {node["node_id"]: node["state"] for node in nodes} == {"a": "ready", "b": "ready"}
