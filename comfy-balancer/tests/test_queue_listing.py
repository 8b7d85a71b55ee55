"""``GET /api/v1/queue`` per tenant and ``GET /api/v1/queue/tasks`` on a real balancer whose one
node is held busy, so tasks stay queued: positions fleet-wide and as each task's own page
says them, ETAs, and each tenant seeing only its own tasks and count."""

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from comfy_testkit import graphs
from comfy_testkit.api import get_task, submit, wait_for_status
from comfy_testkit.api_keys import KeyClient, KeyClients
from comfy_testkit.cluster import Cluster


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"], balancer_args=["--slots-per-node", "1"])


async def submit_as(client: httpx.AsyncClient, owner: str, **fields: Any) -> dict[str, Any]:
    prompt = graphs.solid_image(f"{owner}-{uuid.uuid4().hex[:8]}")
    return await submit(client, prompt, **fields)


async def listed(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/queue/tasks", params=params)
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


async def held_queue(cluster: Cluster, keys: KeyClients) -> tuple[KeyClient, KeyClient]:
    """Ann's first task runs (held); then Ann 2 standard, Bo 1 standard and 1 interactive
    wait, in the order: Bo's interactive, Bo's standard (Ann's running task was charged to
    her turn), Ann's two."""
    ann, bo = await keys.make("ann"), await keys.make("bo", share={"max_band": "interactive"})
    await cluster.node("a").control.hang_next()
    running = await submit_as(ann, "ann")
    await wait_for_status(ann, running["id"], {"running"})
    for client, owner, band in [
        (ann, "ann", "standard"), (ann, "ann", "standard"),
        (bo, "bo", "standard"), (bo, "bo", "interactive"),
    ]:  # fmt: skip
        await submit_as(client, owner, band=band)
    return ann, bo


async def test_an_admin_lists_every_waiting_task_in_run_order_as_their_pages_say(
    cluster: Cluster, keys: KeyClients
) -> None:
    await held_queue(cluster, keys)

    tasks = await listed(cluster.api)
    queue = (await cluster.api.get("/api/v1/queue")).json()

    assert [(t["tenant"], t["band"], t["position"]) for t in tasks] == [
        ("bo", "interactive", 0), ("bo", "standard", 1), ("ann", "standard", 2),
        ("ann", "standard", 3),
    ]  # fmt: skip
    for task in tasks:
        page = await get_task(cluster.api, task["task_id"])
        assert (page["status"], page["queue_position"]) == ("queued", task["position"])
        assert (task["priority"], task["workflow"], task["queued_at"]) == (
            0, None, page["created_at"],
        )  # fmt: skip
    starts = [task["eta"]["start"] for task in tasks]
    assert starts == sorted(starts)
    assert (queue["pending"], queue["by_tenant"]) == (4, {"ann": 2, "bo": 2})
    assert [t["task_id"] for t in await listed(cluster.api, limit=2)] == [
        t["task_id"] for t in tasks[:2]
    ]
    await cluster.node("a").control.release()


async def test_a_tenant_sees_only_its_own_tasks_and_count_with_fleet_wide_positions(
    cluster: Cluster, keys: KeyClients
) -> None:
    ann, bo = await held_queue(cluster, keys)

    anns, bos = await listed(ann), await listed(bo)
    ann_queue, bo_queue = (
        (await ann.get("/api/v1/queue")).json(),
        (await bo.get("/api/v1/queue")).json(),
    )
    first_three = await listed(ann, limit=3)  # of the fleet's first three, Ann's

    assert [(t["tenant"], t["position"]) for t in anns] == [("ann", 2), ("ann", 3)]
    assert [(t["tenant"], t["position"]) for t in bos] == [("bo", 0), ("bo", 1)]
    assert (ann_queue["by_tenant"], bo_queue["by_tenant"]) == ({"ann": 2}, {"bo": 2})
    assert ann_queue["pending"] == 4
    assert [t["position"] for t in first_three] == [2]
    assert "bo" not in (await ann.get("/api/v1/queue/tasks")).text
    await cluster.node("a").control.release()


@pytest.mark.parametrize("limit", ["0", "501", "x"])
async def test_a_limit_out_of_range_is_refused(cluster: Cluster, limit: str) -> None:
    response = await cluster.api.get("/api/v1/queue/tasks", params={"limit": limit})
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
