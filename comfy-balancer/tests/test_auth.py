"""API keys, scopes and tenants on a real balancer (authentication on, as deployed)."""

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from comfy_testkit import graphs
from comfy_testkit.api import wait_until_finished
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import ADMIN_KEY
from comfy_testkit.waiting import wait_for_condition

OPEN_PATHS = {"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json"}
SAMPLE_PATH_VALUES = {
    "task_id": "t-1",
    "index": "0",
    "name": "demo",
    "key_id": "k0123456789",
    "group": "class-1",
    "node_id": "a",
}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"])


@pytest.fixture
async def as_key(cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    """Makes a key through the admin API and returns a client that presents it."""
    async with KeyClients(cluster) as keys:
        yield keys.make


async def every_route(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(method, path) of every route of the running balancer: each one of its OpenAPI
    document, and the document and its pages themselves, sample values in the path."""
    schema = (await client.get("/openapi.json")).json()
    routes = [("GET", path) for path in OPEN_PATHS - {"/healthz", "/readyz"}]
    for path, operations in schema["paths"].items():
        for method in operations:
            routes.append((method.upper(), path.format(**SAMPLE_PATH_VALUES)))
    return routes


async def test_every_route_but_health_and_docs_refuses_a_request_without_a_key(
    cluster: Cluster,
) -> None:
    anonymous = httpx.AsyncClient(base_url=cluster.balancer.url, timeout=10)
    refused: list[tuple[str, str, httpx.Response]] = []
    open_: list[tuple[str, str, httpx.Response]] = []
    async with anonymous:
        for method, path in await every_route(anonymous):
            response = await anonymous.request(method, path)
            (open_ if path in OPEN_PATHS else refused).append((method, path, response))

    assert len(refused) >= 12  # generate, tasks, events, logs, outputs, nodes, queue, keys...
    for method, path, response in refused:
        body = response.json()
        assert (response.status_code, body["code"], body["type"]) == (
            401, "unauthorized", "validation",
        ), (method, path)  # fmt: skip
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert all(response.status_code == 200 for _, _, response in open_)


async def test_a_key_is_accepted_in_every_documented_place(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.balancer.url, timeout=10) as raw:
        basic = base64.b64encode(f"comfyui-user:{ADMIN_KEY}".encode()).decode()
        for headers in (
            {"Authorization": f"Bearer {ADMIN_KEY}"},
            {"X-API-Key": ADMIN_KEY},
            {"Authorization": f"Basic {basic}"},
        ):
            assert (await raw.get("/api/v1/nodes", headers=headers)).status_code == 200
        wrong = await raw.get("/api/v1/nodes", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        task = (await cluster.api.post("/api/v1/generate", json={"workflow": "demo"})).json()
        path = f"/api/v1/tasks/{task['id']}"
        # ?token= is for event streams only (a browser's EventSource cannot send headers).
        assert (await raw.get(path, params={"token": ADMIN_KEY})).status_code == 401
        async with raw.stream("GET", f"{path}/events", params={"token": ADMIN_KEY}) as events:
            assert events.status_code == 200


async def test_scopes_decide_what_a_key_may_do(as_key: Callable[..., Any]) -> None:
    reader = await as_key(fresh("reader"), scopes=["read"])
    submitter = await as_key(fresh("writer"), scopes=["submit"])

    refused = await reader.post("/api/v1/generate", json={"workflow": "demo"})
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert (await reader.get("/api/v1/tasks")).status_code == 200
    assert (await submitter.post("/api/v1/generate", json={"workflow": "demo"})).status_code == 202
    assert (await submitter.get("/api/v1/tasks")).status_code == 403
    for client in (reader, submitter):  # neither is an admin
        assert (await client.get("/api/v1/keys")).status_code == 403


async def test_a_secret_is_shown_once_never_logged_and_revocable(
    cluster: Cluster, as_key: Callable[..., Any]
) -> None:
    client = await as_key(fresh("temp"))
    secret = client.headers["authorization"].removeprefix("Bearer ")
    assert (await client.get("/api/v1/tasks")).status_code == 200

    listed = (await cluster.api.get("/api/v1/keys")).json()
    assert client.key["id"] in [key["id"] for key in listed]
    assert secret not in str(listed)
    revoked = await cluster.api.delete(f"/api/v1/keys/{client.key['id']}")
    assert revoked.status_code == 200

    async def refused() -> bool:
        response: httpx.Response = await client.get("/api/v1/tasks")
        return response.status_code == 401

    await wait_for_condition(refused, what="the revoked key refused", timeout_s=5)
    assert secret not in cluster.balancer.process.output()
    assert ADMIN_KEY not in cluster.balancer.process.output()
    assert (await cluster.api.delete("/api/v1/keys/k0000000000")).status_code == 404


async def test_a_tenant_sees_only_its_own_tasks(
    cluster: Cluster, as_key: Callable[..., Any]
) -> None:
    alice = await as_key(fresh("alice"))
    bob = await as_key(fresh("bob"))
    task_id = fresh("alice-task")
    created = await alice.post(
        "/api/v1/generate", json={"prompt": graphs.solid_image(task_id), "task_id": task_id}
    )
    assert created.status_code == 202
    done = await wait_until_finished(alice, task_id)
    assert (done["status"], done["tenant"]) == ("succeeded", alice.key["tenant"])

    path = f"/api/v1/tasks/{task_id}"
    for method, suffix in (
        ("GET", ""), ("DELETE", ""), ("GET", "/events"), ("GET", "/logs"),
        ("GET", "/outputs"), ("GET", "/outputs/0"), ("DELETE", "/outputs"),
    ):  # fmt: skip
        response = await bob.request(method, path + suffix)
        assert (response.status_code, response.json()["code"]) == (404, "task_not_found"), suffix
    assert task_id not in str((await bob.get("/api/v1/tasks")).json())
    assert task_id in str((await alice.get("/api/v1/tasks")).json())
    assert task_id in str((await cluster.api.get("/api/v1/tasks")).json())  # admin: all
    assert (await alice.get(path + "/outputs/0")).status_code == 200
    taken = await bob.post(
        "/api/v1/generate", json={"prompt": graphs.solid_image(task_id), "task_id": task_id}
    )
    assert (taken.status_code, taken.json()["code"]) == (409, "task_id_taken")


async def test_another_tenant_s_workflow_shapes_do_not_show_in_the_nodes(
    cluster: Cluster, as_key: Callable[..., Any]
) -> None:
    alice = await as_key(fresh("alice"))
    bob = await as_key(fresh("bob"))
    created = await alice.post("/api/v1/generate", json={"prompt": graphs.solid_image(fresh("s"))})
    await wait_until_finished(alice, created.json()["id"])

    async def profile(client: httpx.AsyncClient) -> dict[str, Any]:
        nodes = (await client.get("/api/v1/nodes")).json()
        found: dict[str, Any] = nodes[0]["health"]["profile"]
        return found

    async def learned() -> bool:
        return bool((await profile(cluster.api))["shape_run_s"])  # the admin sees it

    await wait_for_condition(learned, what="the node's run time of alice's workflow")
    for tenant in (alice, bob):
        seen = await profile(tenant)
        assert (seen["shape_run_s"], seen["shape_vram_bytes"]) == ({}, {})


async def test_idempotency_keys_belong_to_a_tenant_and_to_one_request(
    as_key: Callable[..., Any],
) -> None:
    alice = await as_key(fresh("alice"))
    bob = await as_key(fresh("bob"))
    key = {"Idempotency-Key": fresh("order")}
    body = {"prompt": graphs.solid_image(fresh("i"))}

    first = await alice.post("/api/v1/generate", json=body, headers=key)
    again = await alice.post("/api/v1/generate", json=body, headers=key)
    other = await alice.post("/api/v1/generate", json={"workflow": "demo"}, headers=key)
    bobs = await bob.post("/api/v1/generate", json=body, headers=key)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reuse")
    assert bobs.status_code == 202  # Bob's key of the same name is his own
    assert bobs.json()["id"] != first.json()["id"]


async def test_a_key_s_priority_and_submit_rate_are_limited(as_key: Callable[..., Any]) -> None:
    limited = await as_key(fresh("student"), limits={"max_priority": 0, "submits_per_minute": 3})

    too_high = await limited.post("/api/v1/generate", json={"workflow": "demo", "priority": 5})
    assert (too_high.status_code, too_high.json()["code"]) == (403, "priority_not_allowed")
    answers = [await limited.post("/api/v1/generate", json={"workflow": "demo"}) for _ in range(4)]

    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers[:3]] == ["2", "1", "0"]
    refused = answers[-1]
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one token per 20 s
    assert refused.headers["ratelimit-limit"] == "3"


async def test_a_key_s_queued_and_running_tasks_are_limited(
    cluster: Cluster, as_key: Callable[..., Any]
) -> None:
    capped = await as_key(fresh("batch"), limits={"max_running": 1, "max_queued": 3})
    other = await as_key(fresh("interactive"))
    slow = [graphs.txt2img(fresh("slow"), steps=40, seed=n) for n in range(3)]

    answers = [await capped.post("/api/v1/generate", json={"prompt": g}) for g in slow]
    assert [a.status_code for a in answers] == [202, 202, 202]
    ids = [a.json()["id"] for a in answers]
    quick = await other.post("/api/v1/generate", json={"prompt": graphs.solid_image(fresh("q"))})

    running: list[int] = []

    async def count_running() -> bool:
        statuses = [(await capped.get(f"/api/v1/tasks/{i}")).json()["status"] for i in ids]
        running.append(sum(s in ("dispatched", "running") for s in statuses))
        return all(s == "succeeded" for s in statuses)

    await wait_for_condition(count_running, what="the capped tasks done", timeout_s=60)
    assert max(running) == 1  # the node has two slots, the key may use one
    assert (await wait_until_finished(other, quick.json()["id"]))["status"] == "succeeded"


async def test_a_key_with_as_many_tasks_waiting_as_it_may_gets_429(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster([])  # no node: everything waits
    created = await cluster.api.post(
        "/api/v1/keys", json={"name": fresh("q"), "limits": {"max_queued": 2}}
    )
    headers = {"Authorization": f"Bearer {created.json()['key']}"}
    async with httpx.AsyncClient(
        base_url=cluster.balancer.url, timeout=10, headers=headers
    ) as client:
        answers = await asyncio.gather(
            *(client.post("/api/v1/generate", json={"workflow": "demo"}) for _ in range(4))
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [202, 202, 429, 429]
        full = next(a for a in answers if a.status_code == 429)
        assert full.json()["code"] == "key_queue_full"
        queued = [a.json()["id"] for a in answers if a.status_code == 202]
        await client.delete(f"/api/v1/tasks/{queued[0]}")  # one leaves the queue
        assert (await client.post("/api/v1/generate", json={"workflow": "demo"})).status_code == 202
