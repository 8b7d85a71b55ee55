"""comfy-service against hostile requests (bodies, graphs, images, media types, slow bodies,
task ids, priorities, methods) and its OpenAPI contract, over real HTTP with a real Redis and
the emulator as ComfyUI (real processes)."""

import httpx
import pytest
from redis.asyncio import Redis

from comfy_service.errors import STATUS_FOR
from comfy_shared.api.errors import answer_codes
from comfy_shared.api.internal_auth import UNAUTHORIZED_CODE
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import hostile
from comfy_testkit.hostile import POISONS, body_bytes, refusal_problems
from comfy_testkit.plugin import ServiceFactory
from comfy_testkit.stack import RunningComponent

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


async def test_a_graph_of_the_wrong_shape_is_refused_before_comfyui_is_asked(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    # invalid_request comes from reading the body: the task is never created, so never sent
    await hostile.check_a_graph_of_the_wrong_shape_is_refused_at_intake(api)

    assert await redis.keys(RedisKeys().task("*")) == []


async def test_inputs_may_be_any_json_comfyui_takes(api: httpx.AsyncClient) -> None:
    await hostile.check_inputs_may_be_any_json_comfyui_takes(api)


async def test_graphs_and_strings_over_their_limits_are_refused(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    await hostile.check_a_graph_over_the_node_limit_is_refused(api)
    await hostile.check_strings_over_the_limit_are_refused_wherever_they_are(api)

    assert await redis.keys(RedisKeys().task("*")) == []


async def test_a_long_prompt_under_the_limit_runs(api: httpx.AsyncClient) -> None:
    await hostile.check_a_long_prompt_under_the_limit_runs(api)


async def test_images_are_checked_by_their_header_before_anything_is_stored(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    await hostile.check_images_are_checked_by_their_header_before_anything_is_stored(api)

    assert await redis.keys(RedisKeys().task("*")) == []  # no task, no stored input image
    await hostile.check_an_image_within_the_limits_runs(api)


async def test_only_json_bodies_are_read(api: httpx.AsyncClient) -> None:
    await hostile.check_only_json_bodies_are_read(api)


BODY_TIMEOUT_S = 1.0


@pytest.fixture
def impatient_service(
    start_service: ServiceFactory, emulator: RunningComponent
) -> RunningComponent:
    return start_service(emulator.url, extra_args=["--body-read-timeout-s", str(BODY_TIMEOUT_S)])


async def test_a_body_that_never_arrives_is_cut_with_408(
    impatient_service: RunningComponent,
) -> None:
    await hostile.check_a_body_that_never_arrives_is_cut(
        impatient_service.url,
        timeout_s=BODY_TIMEOUT_S,
        headers=impatient_service.auth_headers,
    )
    await hostile.check_a_trickling_body_gets_no_fresh_timeout_per_chunk(
        impatient_service.url,
        timeout_s=BODY_TIMEOUT_S,
        headers=impatient_service.auth_headers,
    )


async def test_the_openapi_documents_every_error_as_answered(api: httpx.AsyncClient) -> None:
    # the internal token's 401 comes from its middleware, not the error table
    answers = answer_codes(STATUS_FOR) | {UNAUTHORIZED_CODE: 401}
    await hostile.check_the_openapi_documents_every_error_as_answered(api, answers)
    await hostile.check_the_openapi_names_what_the_history_routes_answer(api)


async def test_a_method_a_path_does_not_serve_gets_405_with_every_method_it_does(
    api: httpx.AsyncClient,
) -> None:
    await hostile.check_a_method_a_path_does_not_serve_gets_405_with_every_method_it_does(api)


async def test_a_graph_cannot_name_a_staged_input(api: httpx.AsyncClient) -> None:
    await hostile.check_a_graph_cannot_name_a_staged_input(api)


async def test_an_idempotency_key_names_one_request(api: httpx.AsyncClient) -> None:
    await hostile.check_an_idempotency_key_names_one_request(api)
