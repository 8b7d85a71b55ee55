"""The balancer against hostile requests (bodies, graphs, images, multipart shapes, media
types, slow bodies, task ids, list cursors, methods) and its OpenAPI contract, with a real
service, emulator and Redis (real processes)."""

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from comfy_balancer.errors import STATUS_FOR
from comfy_shared.api.errors import answer_codes
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs, hostile
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.hostile import (
    BAD_IMAGES,
    POISONS,
    TEXT_POISONS,
    body_bytes,
    real_png,
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


async def test_a_body_that_is_not_utf8_is_malformed_json_on_the_routes_fastapi_reads_too(
    api: httpx.AsyncClient,
) -> None:
    not_utf8 = b'{"name": "\xff\xfe"}'
    for method, path in (("POST", "/api/v1/keys"), ("PUT", "/api/v1/groups/class-1")):
        response = await api.request(method, path, content=not_utf8, headers=JSON)
        assert (response.status_code, response.json()["code"]) == (400, "malformed_json"), path


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


async def test_a_graph_of_the_wrong_shape_is_refused_and_no_attempt_is_spent(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    await hostile.check_a_graph_of_the_wrong_shape_is_refused_at_intake(api)

    assert await redis.keys(RedisKeys().task("*")) == []
    assert (await api.get("/api/v1/queue")).json()["pending"] == 0
    [node] = (await api.get("/api/v1/nodes")).json()
    assert node["recent_failures"] == 0


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
    problems = []
    for name, (data, reason) in BAD_IMAGES.items():
        response = await api.post("/api/v1/generate", files=_img2img_form(image=data))
        body = response.json()
        if (response.status_code, body.get("code")) != (422, "invalid_params") or reason not in (
            body["errors"]["image"]
        ):
            problems.append(f"{name} as a file part: {response.status_code} {body}")

    assert problems == []
    assert await redis.keys(RedisKeys().task("*")) == []  # no task, no stored input image
    await hostile.check_an_image_within_the_limits_runs(api)


def _img2img_form(
    request: Any = None, **images: bytes
) -> list[tuple[str, tuple[str | None, bytes | str]]]:
    body = {"workflow": "img2img-sdxl", "params": {"prompt": "x", "steps": 2}}
    parts: list[tuple[str, tuple[str | None, bytes | str]]] = [
        ("request", (None, json.dumps(body if request is None else request)))
    ]
    return parts + [(name, (f"{name}.png", data)) for name, data in images.items()]


async def test_an_image_as_a_file_part_runs(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/generate", files=_img2img_form(image=real_png()))
    assert response.status_code == 202, response.text

    task = await wait_until_finished(api, response.json()["id"], timeout_s=30)

    assert task["status"] == "succeeded"
    assert task["params"]["image"].startswith("<png image")


FORM_SHAPES: dict[str, tuple[Any, int, str]] = {
    "request not an object": (
        [("request", (None, "[1, 2]")), ("image", ("a.png", real_png()))],
        422,
        "invalid_request",
    ),
    "params not an object with a file part": (
        _img2img_form({"workflow": "img2img-sdxl", "params": [1]}, image=real_png()),
        422,
        "invalid_request",
    ),
    "a file part that is no image parameter": (
        _img2img_form(image=real_png(), mask=real_png()),
        422,
        "invalid_params",
    ),
    "two files for one parameter": (
        [*_img2img_form(), ("image", ("a.png", real_png())), ("image", ("b.png", real_png()))],
        422,
        "invalid_params",
    ),
    "an image both in params and as a file": (
        _img2img_form(
            {"workflow": "img2img-sdxl", "params": {"prompt": "x", "image": "AAAA"}},
            image=real_png(),
        ),
        422,
        "invalid_params",
    ),
    "file parts for a graph": (
        _img2img_form({"prompt": graphs.solid_image("form")}, image=real_png()),
        422,
        "invalid_form",
    ),
    "an unknown workflow with a file": (
        _img2img_form({"workflow": "nope"}, image=real_png()),
        422,
        "unknown_workflow",
    ),
    "no request field": ([("image", ("a.png", real_png()))], 422, "invalid_form"),
    "two request fields": ([*_img2img_form(), ("request", (None, "{}"))], 422, "invalid_form"),
    "an unknown plain field": ([*_img2img_form(), ("note", (None, "hi"))], 422, "invalid_form"),
    "a request field that is not JSON": ([("request", (None, "{"))], 400, "malformed_json"),
}


async def test_every_multipart_shape_is_refused_with_its_code_never_500(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    problems = []
    for name, (parts, status, code) in FORM_SHAPES.items():
        response = await api.post("/api/v1/generate", files=parts)
        body = response.json()
        if (response.status_code, body.get("code")) != (status, code):
            problems.append(f"{name}: {response.status_code} {body}")

    assert problems == []
    assert await redis.keys(RedisKeys().task("*")) == []


async def test_a_multipart_body_that_cannot_be_parsed_is_400(api: httpx.AsyncClient) -> None:
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=x"):
        response = await api.post(
            "/api/v1/generate",
            content=b"--y\r\nnot a part\r\n",
            headers={"content-type": content_type},
        )
        body = response.json()
        assert (response.status_code, body["code"]) == (400, "malformed_form"), body


async def test_only_json_and_multipart_bodies_are_read(api: httpx.AsyncClient) -> None:
    await hostile.check_only_json_bodies_are_read(api, forms_too=True)


BODY_TIMEOUT_S = 1.0


async def test_a_body_that_never_arrives_is_cut_with_408_while_event_streams_stay_open(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        ["a"],
        balancer_args=[
            "--body-read-timeout-s", str(BODY_TIMEOUT_S), "--sse-heartbeat-s", "0.2",
        ],
    )  # fmt: skip
    await cluster.node("a").control.hang_next()
    task = await submit(cluster.api, graphs.solid_image("held"))

    await hostile.check_a_body_that_never_arrives_is_cut(
        cluster.balancer.url, timeout_s=BODY_TIMEOUT_S, headers=cluster.balancer.auth_headers
    )
    await hostile.check_a_trickling_body_gets_no_fresh_timeout_per_chunk(
        cluster.balancer.url, timeout_s=BODY_TIMEOUT_S, headers=cluster.balancer.auth_headers
    )
    # without a key the request is refused before its body is awaited
    anonymous = await hostile.post_slowly(
        f"{cluster.balancer.url}/api/v1/generate",
        declared=100,
        chunks=[b"{"],
        interval_s=0,
        headers={},
        await_close=False,  # the connection lives on until uvicorn's keep-alive ends it
    )
    assert (anonymous.status, anonymous.body["code"]) == (401, "unauthorized")
    # The stream waits on the request for the client's disconnect long past the body's
    # deadline: that wait must not be timed.
    await hostile.check_an_event_stream_outlives_the_body_timeout(
        cluster.api, task["id"], timeout_s=BODY_TIMEOUT_S
    )


async def test_the_openapi_documents_every_error_as_answered(api: httpx.AsyncClient) -> None:
    await hostile.check_the_openapi_documents_every_error_as_answered(api, answer_codes(STATUS_FOR))
    await hostile.check_the_openapi_names_what_the_history_routes_answer(api)


async def test_a_method_a_path_does_not_serve_gets_405_with_every_method_it_does(
    api: httpx.AsyncClient,
) -> None:
    await hostile.check_a_method_a_path_does_not_serve_gets_405_with_every_method_it_does(api)


async def test_a_graph_cannot_name_a_staged_input(api: httpx.AsyncClient) -> None:
    await hostile.check_a_graph_cannot_name_a_staged_input(api)


async def test_an_idempotency_key_names_one_request(api: httpx.AsyncClient) -> None:
    await hostile.check_an_idempotency_key_names_one_request(api)
