"""Previews on /api/v1: a task that asks for them gets its sampler's newest image at
``GET /api/v1/tasks/{id}/preview`` while it runs, from any balancer, for its tenant only."""

import io
import uuid
from collections.abc import Callable

import httpx
import pytest
from PIL import Image

from comfy_testkit import graphs
from comfy_testkit.api import get_task, wait_for_status
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.waiting import wait_for_condition


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    made = make_cluster(["a"])
    await made.nodes_ready(1)
    return made


async def long_task(client: httpx.AsyncClient, *, previews: bool) -> str:
    graph = graphs.txt2img(f"preview-{uuid.uuid4().hex[:8]}", steps=5000)
    answer = await client.post("/api/v1/generate", json={"prompt": graph, "previews": previews})
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["id"]
    return task_id


async def test_a_running_task_that_asked_shows_its_newest_preview(
    cluster: Cluster, keys: KeyClients
) -> None:
    alice, bob = await keys.make("alice"), await keys.make("bob")
    task_id = await long_task(alice, previews=True)
    await wait_for_status(alice, task_id, {"running"})

    async def a_preview() -> httpx.Response | None:
        answer = await alice.get(f"/api/v1/tasks/{task_id}/preview")
        return answer if answer.status_code == 200 else None

    first = await wait_for_condition(a_preview, timeout_s=20, what="a preview")
    step_then = (await get_task(alice, task_id))["progress"]["value"]

    async def a_later_one() -> httpx.Response | None:
        answer = await a_preview()
        return answer if answer is not None and answer.content != first.content else None

    later = await wait_for_condition(a_later_one, timeout_s=20, what="a newer preview")
    theirs = await bob.get(f"/api/v1/tasks/{task_id}/preview")
    await alice.delete(f"/api/v1/tasks/{task_id}")
    await wait_for_status(alice, task_id, {"cancelled"})
    ended = await alice.get(f"/api/v1/tasks/{task_id}/preview")

    assert first.headers["content-type"] == "image/jpeg"
    assert first.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(first.content)).format == "JPEG"
    assert step_then >= 1
    assert Image.open(io.BytesIO(later.content)).format == "JPEG"
    assert (theirs.status_code, theirs.json()["code"]) == (404, "task_not_found")
    assert (ended.status_code, ended.content) == (204, b"")


async def test_a_task_that_did_not_ask_has_no_preview(cluster: Cluster, keys: KeyClients) -> None:
    alice = await keys.make("alice")
    task_id = await long_task(alice, previews=False)
    await wait_for_status(alice, task_id, {"running"})

    async def stepped() -> bool:
        progress = (await get_task(alice, task_id))["progress"]
        return bool(progress and progress["value"] >= 3)

    await wait_for_condition(stepped, timeout_s=20, what="three steps run")
    answer = await alice.get(f"/api/v1/tasks/{task_id}/preview")
    await alice.delete(f"/api/v1/tasks/{task_id}")

    assert (answer.status_code, answer.json()["code"]) == (404, "preview_not_found")
    assert "did not ask for previews" in answer.json()["detail"]
