"""The whole stack on a real Redis Cluster of three primaries (README "Redis Cluster"): a
balancer, two services and their emulators, each a real process, reach Redis through a
``redis+cluster://`` URL, and the main paths work as on one Redis: submits with an API key,
idempotency, placement on both nodes, a live event stream, a cancel, outputs, the task list,
the task's log, node health, a webhook, and the ComfyUI gateway. Redis then holds the shared
slot's keys on one primary and the keys that have slots of their own spread over the others."""

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from comfy_shared.redis_keys import RedisKeys
from comfy_stack.ports import free_port
from comfy_testkit import graphs
from comfy_testkit.api import read_sse, submit, wait_for_status, wait_until_finished
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.gateway_ws import ComfyWsClient
from comfy_testkit.redis_cluster import RedisClusterServers
from comfy_testkit.stack import AUTH_HEADERS
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys(cluster=True)


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    """Every process of these tests (and the ``redis`` fixture) talks to the cluster."""
    return redis_cluster_url


@pytest.fixture
async def webhooks() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A receiver on loopback: its URL and the payloads it got."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook", received
    await runner.cleanup()


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def test_the_stack_runs_on_a_three_primary_redis_cluster(
    make_cluster: Callable[..., Cluster],
    redis_cluster: RedisClusterServers,
    webhooks: tuple[str, list[dict[str, Any]]],
) -> None:
    hook_url, delivered = webhooks
    cluster = make_cluster(
        ["a", "b"],
        balancer_args=["--webhook-allow", "127.0.0.1/32", "--webhook-poll-s", "0.05"],
    )
    await cluster.nodes_ready(2)
    async with KeyClients(cluster) as keys:
        alice = await keys.make("alice")

        # A live event stream: the stream hub's blocking read on the cluster.
        watched = await submit(alice, graphs.txt2img(f"w-{fresh()}", steps=60))
        events = asyncio.create_task(read_sse(alice, f"/api/v1/tasks/{watched['id']}/events"))
        once = {"Idempotency-Key": f"k-{fresh()}"}
        first = await alice.post(
            "/api/v1/generate", json={"prompt": graphs.txt2img("i")}, headers=once
        )
        again = await alice.post(
            "/api/v1/generate", json={"prompt": graphs.txt2img("i")}, headers=once
        )
        hooked = await submit(alice, graphs.txt2img(f"h-{fresh()}"), webhook_url=hook_url)
        others = [await submit(alice, graphs.txt2img(f"s-{fresh()}", seed=n)) for n in range(4)]
        doomed = await submit(alice, graphs.txt2img(f"c-{fresh()}", steps=2000))
        await wait_for_status(alice, doomed["id"], {"running"})
        cancelled = await alice.delete(f"/api/v1/tasks/{doomed['id']}")

        ids = [watched["id"], first.json()["id"], hooked["id"], *(t["id"] for t in others)]
        tasks = [await wait_until_finished(alice, task_id, timeout_s=40) for task_id in ids]
        ended_doomed = await wait_until_finished(alice, doomed["id"])
        streamed = await asyncio.wait_for(events, timeout=20)
        listed = (await alice.get("/api/v1/tasks", params={"limit": 50})).json()
        download = await alice.get(tasks[0]["outputs"][0]["url"])
        nodes = (await cluster.api.get("/api/v1/nodes")).json()

        async def webhook_arrived() -> bool:
            return any(d["data"]["id"] == hooked["id"] for d in delivered)

        async def logged_by_balancer_and_service() -> bool:
            path = f"/api/v1/tasks/{watched['id']}/logs"
            records = (await alice.get(path, params={"format": "json"})).json()
            return {"balancer", "service"} <= {record["service"] for record in records}

        await wait_for_condition(webhook_arrived, timeout_s=15, what="the webhook")
        await wait_for_condition(logged_by_balancer_and_service, what="the task's log")

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert [t["status"] for t in tasks] == ["succeeded"] * len(ids)
    assert {t["node_id"] for t in tasks} == {"a", "b"}
    assert cancelled.status_code in (200, 202), cancelled.text
    assert ended_doomed["status"] == "cancelled"
    statuses = [e["data"]["task"]["status"] for e in streamed if e["event"] != "queue"]
    assert statuses[-1] == "succeeded", statuses
    assert "running" in statuses, statuses
    assert {*ids, doomed["id"]} <= {t["id"] for t in listed["tasks"]}
    assert download.status_code == 200
    assert download.content.startswith(b"\x89PNG")
    assert {n["node_id"] for n in nodes if n["state"] in ("ready", "busy")} == {"a", "b"}
    assert_keys_placed_by_their_tags(redis_cluster, ids)


def assert_keys_placed_by_their_tags(cluster: RedisClusterServers, task_ids: list[str]) -> None:
    """Every key of the shared slot is on one primary; keys with slots of their own (each
    task's submission claims, the rate limiter's bucket, the API key index aside) are spread."""
    held: list[set[str]] = []
    for client in cluster.clients():
        with client:
            held.append({str(key) for key in client.scan_iter(count=1000)})
    shared = [keys for keys in held if any(key.startswith(KEYS.root) for key in keys)]
    assert len(shared) == 1, "the shared slot's keys are on more than one primary"
    assert KEYS.task(task_ids[0]) in shared[0]
    claims = {KEYS.task_submission(task_id, 1) for task_id in task_ids}
    assert claims <= set().union(*held)
    assert sum(1 for keys in held if keys) >= 2, "every key landed on one primary"


async def test_the_comfyui_gateway_runs_on_a_redis_cluster(
    make_cluster: Callable[..., Cluster], redis_cluster: RedisClusterServers
) -> None:
    """A ComfyUI client: an upload, a prompt followed on /ws (its frames stream, read by the
    stream hub on the shared slot's primary), its history, a userdata file; under a key
    prefix of this deployment's own."""
    prefix = ["--redis-prefix", "stack-b"]
    cluster = make_cluster(["a"], balancer_args=prefix, service_args=prefix)
    await cluster.nodes_ready(1)
    api = cluster.api
    image = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image, "PNG")
    uploaded = await api.post(
        "/upload/image", files={"image": ("in.png", image.getvalue(), "image/png")}
    )
    ws = await ComfyWsClient.open(cluster.balancer.url, headers=AUTH_HEADERS)
    try:
        await ws.wait_for(lambda client: bool(client.messages()), what="the greeting")
        body = {"prompt": graphs.solid_image(f"g-{fresh()}"), "client_id": ws.sid}
        prompt_id = (await api.post("/prompt", json=body)).json()["prompt_id"]
        await ws.wait_prompt_closed(prompt_id)
    finally:
        await ws.close()
    saved = await api.post("/userdata/flows%2Fa.json", content=b"{}")

    async def history() -> dict[str, Any] | None:
        found: dict[str, Any] | None = (await api.get(f"/history/{prompt_id}")).json()
        return found.get(prompt_id) if found else None

    ended = await wait_for_condition(history, what="the prompt in the history")

    assert uploaded.status_code == 200, uploaded.text
    assert "executed" in [message["type"] for message in ws.of_prompt(prompt_id)]
    assert ended["status"]["status_str"] == "success"
    assert saved.status_code == 200, saved.text
    assert (await api.get("/userdata/flows%2Fa.json")).content == b"{}"
    held = keys_on(redis_cluster)
    assert any(key.startswith("stack-b:gateway:uploads:{") for key in held)  # a slot of its own
    assert any(key.startswith(RedisKeys("stack-b", cluster=True).task(prompt_id)) for key in held)
    assert not any(key.startswith(("comfy:", "{comfy}:")) for key in held)


def keys_on(cluster: RedisClusterServers) -> set[str]:
    held: set[str] = set()
    for client in cluster.clients():
        with client:
            held |= {str(key) for key in client.scan_iter(count=1000)}
    return held
