"""comfy-service against hostile request bodies, task ids and priorities, over real HTTP with
a real Redis and the emulator as ComfyUI (real processes)."""

import httpx
from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import hostile
from comfy_testkit.hostile import POISONS, body_bytes, refusal_problems

JSON = {"content-type": "application/json"}


async def test_every_poisoned_body_is_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    problems = []
    for poison in POISONS:
        response = await api.post("/api/v1/generate", content=body_bytes(poison), headers=JSON)
        problems += refusal_problems(poison, response)

    assert problems == []
    assert await redis.keys(RedisKeys().task("*")) == []


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
