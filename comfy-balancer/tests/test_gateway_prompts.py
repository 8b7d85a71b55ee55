"""POST /prompt on a real balancer: bodies as ComfyUI clients send them, ComfyUI's refusals and
the facade's own, in ComfyUI's envelope; who may call, from where; the setting that turns the
gateway off."""

import base64
import json
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


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def envelope_of(response: httpx.Response) -> dict[str, Any]:
    """The error of ComfyUI's envelope, checked for the shape the frontend reads."""
    body = response.json()
    assert set(body) == {"error", "node_errors"}, body
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}, body
    assert all(isinstance(body["error"][k], str) for k in ("type", "message", "details"))
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"])


@pytest.fixture
async def as_key(cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    async with KeyClients(cluster) as keys:
        yield keys.make


async def test_a_prompt_is_read_as_json_whatever_its_content_type_says(cluster: Cluster) -> None:
    await cluster.nodes_ready(1)
    api = cluster.api
    answers = []
    for path, content_type in (
        ("/prompt", "application/x-www-form-urlencoded"),  # urllib's default label
        ("/api/prompt", None),
        ("/prompt", "application/json"),
    ):
        body = json.dumps({"prompt": graphs.solid_image(fresh("form")), "client_id": "c1"})
        headers = {"Content-Type": content_type} if content_type else {}
        response = await api.post(path, content=body.encode(), headers=headers)
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"prompt_id", "number", "node_errors"}
        answers.append(response.json())
    numbers = [answer["number"] for answer in answers]
    assert numbers == sorted(set(numbers))  # drawn from one counter
    for answer in answers:
        task = await wait_until_finished(api, answer["prompt_id"])  # the prompt id IS the task
        assert task["status"] == "succeeded", task


async def test_comfyui_s_refusals_come_with_its_bodies(cluster: Cluster) -> None:
    api = cluster.api
    no_prompt = await api.post("/prompt", json={"client_id": "x"})
    assert no_prompt.status_code == 400
    assert no_prompt.json() == {
        "error": {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        },
        "node_errors": {},
    }
    for bad_id in ("NOT-A-UUID", str(uuid.uuid4()).upper(), uuid.uuid4().hex, 12):
        refused = await api.post(
            "/api/prompt", json={"prompt": graphs.solid_image("p"), "prompt_id": bad_id}
        )
        assert refused.status_code == 400
        error = envelope_of(refused)
        assert (error["type"], error["message"]) == (
            "invalid_prompt_id",
            "prompt_id must be a valid UUID",
        )
    no_class = await api.post("/prompt", json={"prompt": {"1": {"inputs": {}}}})
    assert (no_class.status_code, envelope_of(no_class)["details"]) == (400, "Node ID '#1'")
    not_json = await api.post("/prompt", content=b"prompt=1")
    assert (not_json.status_code, envelope_of(not_json)["type"]) == (400, "malformed_json")


async def test_a_graph_the_fleet_refuses_gets_comfyui_s_400_with_node_errors_at_once(
    cluster: Cluster,
) -> None:
    await cluster.nodes_ready(1)
    graph = graphs.solid_image(fresh("bad"))
    graph["1"]["inputs"]["width"] = 10**6  # above EmptyImage's max

    refused = await cluster.api.post("/prompt", json={"prompt": graph, "client_id": "c"})
    pending = (await cluster.api.get("/queue")).json()

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["type"] == "prompt_outputs_failed_validation"
    errors = refused.json()["node_errors"]["1"]["errors"]
    assert [error["type"] for error in errors] == ["value_bigger_than_max"]
    assert pending == {"queue_running": [], "queue_pending": []}


async def test_a_prompt_id_is_used_once(cluster: Cluster) -> None:
    prompt_id = str(uuid.uuid4())
    body = {"prompt": graphs.solid_image(fresh("once")), "prompt_id": prompt_id}
    first = await cluster.api.post("/prompt", json=body)
    assert first.json()["prompt_id"] == prompt_id
    again = await cluster.api.post("/prompt", json=body)
    assert again.status_code == 409
    assert envelope_of(again)["type"] == "task_id_taken"


async def test_the_facade_s_refusals_keep_their_status_and_retry_after(
    cluster: Cluster, as_key: Callable[..., Any]
) -> None:
    await cluster.nodes_ready(1)
    limited = await as_key(fresh("limited"), limits={"submits_per_minute": 1})
    assert (await limited.post("/prompt", json={"prompt": graphs.solid_image("a")})).is_success
    throttled = await limited.post("/prompt", json={"prompt": graphs.solid_image("b")})
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert envelope_of(throttled)["type"] == "rate_limited"
    unknown = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    no_node = await cluster.api.post("/prompt", json={"prompt": unknown})
    error = envelope_of(no_node)  # refused at the door as ComfyUI refuses it
    assert (no_node.status_code, error["type"]) == (400, "invalid_prompt")
    assert "NoSuchNode" in error["message"]


async def test_every_caller_needs_a_key_and_a_browser_s_changes_come_from_the_same_site(
    cluster: Cluster, as_key: Callable[..., Any]
) -> None:
    async with httpx.AsyncClient(base_url=cluster.balancer.url, timeout=10) as anonymous:
        refused = await anonymous.get("/history")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert envelope_of(refused)["type"] == "unauthorized"
        assert (await anonymous.get("/queue", params={"token": ADMIN_KEY})).status_code == 200

        basic = "Basic " + base64.b64encode(f"me:{ADMIN_KEY}".encode()).decode()
        body = {"prompt": graphs.solid_image(fresh("site"))}
        for cross_site in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            forged = await anonymous.post(
                "/prompt", json=body, headers={"Authorization": basic, **cross_site}
            )
            assert forged.status_code == 403
            assert envelope_of(forged)["type"] == "cross_site_request"
        same_site = {"Origin": cluster.balancer.url, "Sec-Fetch-Site": "same-origin"}
        own = await anonymous.post(
            "/prompt", json=body, headers={"Authorization": basic, **same_site}
        )
        assert own.status_code == 200, own.text
        # A header no page can set cross-site needs no such check.
        keyed = await anonymous.post(
            "/prompt",
            json={"prompt": graphs.solid_image(fresh("site"))},
            headers={"X-API-Key": ADMIN_KEY, "Origin": "https://elsewhere.example"},
        )
        assert keyed.status_code == 200, keyed.text
    schema = (await cluster.api.get("/openapi.json")).json()  # /api/v1's document only
    assert not {"/prompt", "/api/prompt", "/view", "/api/jobs"} & set(schema["paths"])
    reader = await as_key(fresh("reader"), scopes=["read"])
    assert (await reader.get("/queue")).status_code == 200
    forbidden = await reader.post("/prompt", json={"prompt": graphs.solid_image("r")})
    assert (forbidden.status_code, envelope_of(forbidden)["type"]) == (403, "forbidden")


async def test_the_gateway_can_be_turned_off(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster([], balancer_args=["--no-comfyui-gateway"])
    assert (await cluster.api.post("/prompt", json={"prompt": {}})).status_code == 404
    assert (await cluster.api.get("/api/v1/tasks")).status_code == 200


async def test_object_info_is_the_fleet_s_and_an_unknown_class_is_empty(cluster: Cluster) -> None:
    await cluster.nodes_ready(1)
    async with httpx.AsyncClient(base_url=cluster.node("a").emulator.url) as comfy:
        node_s = (await comfy.get("/object_info")).json()

    async def published() -> bool:
        return bool((await cluster.api.get("/api/object_info")).json())

    await wait_for_condition(published, timeout_s=15, what="the fleet's object_info")
    fleet = (await cluster.api.get("/object_info")).json()
    one = (await cluster.api.get("/api/object_info/SaveImage")).json()
    unknown = await cluster.api.get("/object_info/NoSuchNode")

    assert set(fleet) == set(node_s)
    assert one == {"SaveImage": node_s["SaveImage"]}
    assert (unknown.status_code, unknown.json()) == (200, {})
