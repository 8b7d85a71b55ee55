"""The balancer against hostile request bodies, task ids and list cursors, with a real service,
emulator and Redis (real processes)."""

import uuid
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.hostile import (
    POISONS,
    SEED_MAX,
    TEXT_POISONS,
    body_bytes,
    refusal_problems,
)

JSON = {"content-type": "application/json"}


def fresh() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def api(make_cluster: Callable[..., Cluster]) -> httpx.AsyncClient:
    return make_cluster(["a"]).api


async def test_every_poisoned_body_is_refused_and_nothing_is_queued(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    problems = []
    for poison in POISONS:
        response = await api.post("/api/v1/generate", content=body_bytes(poison), headers=JSON)
        problems += refusal_problems(poison, response)

    assert problems == []
    assert await redis.keys(RedisKeys().task("*")) == []
    assert (await api.get("/api/v1/queue")).json()["pending"] == 0


async def test_the_multipart_request_field_is_read_by_the_same_parser(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    problems = []
    for poison in TEXT_POISONS:
        # A part without a file name is a form field, as a browser sends it.
        response = await api.post("/api/v1/generate", files={"request": (None, body_bytes(poison))})
        problems += refusal_problems(poison, response)
    not_an_object = await api.post("/api/v1/generate", files={"request": (None, b"[1, 2]")})

    assert problems == []
    assert (not_an_object.status_code, not_an_object.json()["code"]) == (422, "invalid_request")
    assert await redis.keys(RedisKeys().task("*")) == []


async def test_a_task_id_that_names_another_task_s_keys_is_refused(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, graphs.solid_image(f"k-{fresh()}"), task_id=f"x-{fresh()}")

    collision = await api.post(
        "/api/v1/generate",
        json={"prompt": graphs.solid_image(f"k-{fresh()}"), "task_id": f"{task['id']}:events"},
    )

    assert (collision.status_code, collision.json()["code"]) == (422, "invalid_request")
    assert (await wait_until_finished(api, task["id"]))["status"] == "succeeded"


async def test_an_id_whose_keys_were_claimed_first_still_runs(api: httpx.AsyncClient) -> None:
    squatter = await api.post(
        "/api/v1/generate",
        json={"prompt": graphs.solid_image(f"q-{fresh()}"), "task_id": "order-200:events"},
    )
    assert squatter.status_code == 422

    task = await submit(api, graphs.solid_image(f"q-{fresh()}"), task_id="order-200")

    assert (await wait_until_finished(api, task["id"]))["status"] == "succeeded"


async def test_every_task_route_refuses_an_id_outside_the_alphabet(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, graphs.solid_image(f"r-{fresh()}"), task_id=f"y-{fresh()}")
    await wait_until_finished(api, task["id"])
    # ":events" would address the task's event stream as if it were a task record.
    for bad_id in (f"{task['id']}:events", "-dash-first", "a" * 129, "new%0Aline", "sp%20ace"):
        for method, path in (
            ("GET", f"/api/v1/tasks/{bad_id}"),
            ("DELETE", f"/api/v1/tasks/{bad_id}"),
            ("GET", f"/api/v1/tasks/{bad_id}/events"),
            ("GET", f"/api/v1/tasks/{bad_id}/logs"),
            ("GET", f"/api/v1/tasks/{bad_id}/outputs/0"),
        ):
            response = await api.request(method, path)
            body = response.json()
            assert (response.status_code, body["code"], body["type"]) == (
                422,
                "invalid_task_id",
                "validation",
            ), (method, path, body)


async def test_priority_outside_the_queue_s_range_is_refused(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    for priority in (2000, -2000, 2**63):
        response = await api.post(
            "/api/v1/generate", json={"workflow": "demo", "priority": priority}
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert await redis.keys(RedisKeys().task("*")) == []


async def test_a_cursor_beyond_any_offset_is_refused(api: httpx.AsyncClient) -> None:
    huge = await api.get("/api/v1/tasks", params={"cursor": "16493930957838213839567"})
    largest = await api.get("/api/v1/tasks", params={"cursor": "9" * 18})

    assert (huge.status_code, huge.json()["code"]) == (422, "invalid_request")
    assert largest.status_code == 200
    assert largest.json() == {"tasks": [], "next_cursor": None}


async def test_the_largest_seed_still_runs_on_a_node(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/generate",
        json={"workflow": "txt2img-sdxl", "params": {"prompt": "x", "steps": 2, "seed": SEED_MAX}},
    )
    assert response.status_code == 202, response.text

    task = await wait_until_finished(api, response.json()["id"], timeout_s=30)

    assert task["status"] == "succeeded"
    assert task["params"]["seed"] == SEED_MAX
