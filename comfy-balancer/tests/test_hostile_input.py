"""The balancer against hostile request bodies, task ids and list cursors, with a real service,
emulator and Redis (real processes)."""

from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import hostile
from comfy_testkit.cluster import Cluster
from comfy_testkit.hostile import (
    POISONS,
    TEXT_POISONS,
    body_bytes,
    refusal_problems,
)

JSON = {"content-type": "application/json"}


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


async def test_a_cursor_beyond_any_offset_is_refused(api: httpx.AsyncClient) -> None:
    huge = await api.get("/api/v1/tasks", params={"cursor": "16493930957838213839567"})
    largest = await api.get("/api/v1/tasks", params={"cursor": "9" * 18})

    assert (huge.status_code, huge.json()["code"]) == (422, "invalid_request")
    assert largest.status_code == 200
    assert largest.json() == {"tasks": [], "next_cursor": None}


async def test_a_task_id_that_names_another_task_s_keys_is_refused(api: httpx.AsyncClient) -> None:
    await hostile.check_an_id_naming_another_task_s_keys_is_refused(api)


async def test_an_id_whose_keys_were_claimed_first_still_runs(api: httpx.AsyncClient) -> None:
    await hostile.check_an_id_whose_keys_were_claimed_first_still_runs(api)


async def test_every_task_route_refuses_an_id_outside_the_alphabet(api: httpx.AsyncClient) -> None:
    await hostile.check_every_task_route_refuses_an_id_outside_the_alphabet(api)


async def test_priority_outside_the_queue_s_range_is_refused(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    await hostile.check_priority_outside_the_queue_s_range_is_refused(api)
    assert await redis.keys(RedisKeys().task("*")) == []


async def test_the_largest_seed_still_runs(api: httpx.AsyncClient) -> None:
    await hostile.check_the_largest_seed_still_runs(api)


async def test_a_graph_cannot_name_a_staged_input(api: httpx.AsyncClient) -> None:
    await hostile.check_a_graph_cannot_name_a_staged_input(api)


async def test_an_idempotency_key_names_one_request(api: httpx.AsyncClient) -> None:
    await hostile.check_an_idempotency_key_names_one_request(api)
