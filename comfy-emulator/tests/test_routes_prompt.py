"""/prompt, /queue, /interrupt, /free and /history over real HTTP."""

from __future__ import annotations

import heapq
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from comfy_emulator import RunningEmulator
from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import blur_chain, solid_image, text_to_image

AIOHTTP_500 = "500 Internal Server Error\n\nServer got itself in trouble"


async def hold_worker(client: EmulatorClient) -> str:
    """Queue a prompt that hangs in its first node, so later prompts stay pending."""
    await client.post_json("/emulator/hang-next", {"count": 1})
    blocker = str((await client.post_prompt(solid_image(prefix="blocker")))["prompt_id"])
    await client.wait_running(blocker)
    return blocker


async def test_queue_order_follows_the_heap(client: EmulatorClient) -> None:
    await hold_worker(client)  # number 0
    ids = {}
    extras: list[tuple[str, dict[str, Any]]] = [
        ("q0", {}),
        ("q1", {}),
        ("q2", {}),
        ("front", {"front": True}),
        ("num", {"number": 2.5}),
    ]
    for name, extra in extras:
        ids[name] = (await client.post_prompt(solid_image(prefix=name), **extra))["prompt_id"]
    heap: list[float] = []
    for number in (1, 2, 3, -4, 2.5):
        heapq.heappush(heap, number)
    queue = await client.get_json("/queue")
    assert [item[0] for item in queue["queue_pending"]] == heap  # raw heap order, unsorted
    assert all(len(item) == 5 for item in queue["queue_pending"] + queue["queue_running"])
    await client.post_json("/queue", {"delete": [ids["q1"]]})
    await client.post_json("/emulator/release")
    await client.wait_idle()
    history = await client.get_json("/history")
    by_id = {v: k for k, v in ids.items()}
    assert [by_id[p] for p in list(history)[1:]] == ["front", "q0", "num", "q2"]


async def test_number_counts_rejected_requests_and_ids_are_echoed(client: EmulatorClient) -> None:
    status, _ = await client.post_json("/prompt", {"prompt": solid_image(width=0)})
    assert status == 400
    status, _ = await client.post_json("/prompt", {"client_id": "x"})
    assert status == 400
    response = await client.post_prompt(solid_image(), prompt_id=12345)
    assert (response["number"], response["prompt_id"]) == (2, "12345")
    explicit = await client.post_prompt(solid_image(prefix="n"), number=7)
    assert explicit["number"] == 7.0
    assert isinstance(explicit["number"], float)


async def test_duplicate_prompt_id_overwrites_history(client: EmulatorClient) -> None:
    for prefix in ("first", "second"):
        await client.post_prompt(solid_image(prefix=prefix), prompt_id="same", client_id="c")
        await client.wait_idle()
    entry = await client.wait_for_history("same")
    assert entry["outputs"]["3"]["images"][0]["filename"].startswith("second")


@pytest.mark.parametrize("path", ["/prompt", "/queue", "/history", "/free", "/api/prompt"])
async def test_unparsable_bodies_are_aiohttp_500s(client: EmulatorClient, path: str) -> None:
    async with client.session.post(client.base_url + path, data=b"not json") as response:
        assert response.status == 500
        assert response.content_type == "text/plain"
        assert await response.text() == AIOHTTP_500


async def test_empty_200s_have_no_content_type(client: EmulatorClient) -> None:
    for path, body in [
        ("/queue", b"{}"),
        ("/interrupt", b"garbage"),
        ("/history", b"{}"),
        ("/free", b"{}"),
    ]:
        async with client.session.post(client.base_url + path, data=body) as response:
            assert (response.status, await response.read()) == (200, b"")
            assert "Content-Type" not in response.headers


async def test_interrupt_with_a_pending_id_is_a_no_op(client: EmulatorClient) -> None:
    running_id = await hold_worker(client)
    pending_id = (await client.post_prompt(solid_image(prefix="pending")))["prompt_id"]
    await client.post_json("/interrupt", {"prompt_id": pending_id})
    queue = await client.get_json("/queue")
    assert [i[1] for i in queue["queue_running"]] == [running_id]
    assert [i[1] for i in queue["queue_pending"]] == [pending_id]
    await client.post_json("/interrupt", {"prompt_id": running_id})
    interrupted = await client.wait_for_history(running_id)
    assert (interrupted["status"]["status_str"], interrupted["status"]["completed"]) == (
        "error",
        False,
    )
    assert interrupted["status"]["messages"][-1][0] == "execution_interrupted"
    assert (await client.wait_for_history(pending_id))["status"]["status_str"] == "success"


async def test_global_interrupt_lands_at_the_next_node_start(start: Any) -> None:
    running: RunningEmulator = await start(node_time={"ImageBlur": 0.5})
    async with EmulatorClient(running.url) as client, client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(blur_chain(4), client_id="c"))["prompt_id"]
        await ws.wait_for(lambda m: m["type"] == "executing" and m["data"].get("node") == "10")
        await client.post_json("/interrupt")
        await ws.wait_done(prompt_id)
        event = next(m for m in ws.messages if m["type"] == "execution_interrupted")["data"]
        assert (event["node_id"], event["node_type"], event["executed"]) == (
            "11",
            "ImageBlur",
            ["1", "10"],
        )


async def test_interrupt_while_idle_does_not_leak_into_the_next_prompt(
    client: EmulatorClient,
) -> None:
    await client.post_json("/interrupt")
    prompt_id = (await client.post_prompt(solid_image()))["prompt_id"]
    assert (await client.wait_for_history(prompt_id))["status"]["status_str"] == "success"


async def test_interrupt_lands_at_a_sampler_step(start: Any) -> None:
    running: RunningEmulator = await start(step_time=0.05)
    async with EmulatorClient(running.url) as client, client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(text_to_image(steps=50), client_id="c"))["prompt_id"]
        await ws.wait_for(lambda m: m["type"] == "progress")
        await client.post_json("/interrupt", {"prompt_id": prompt_id})
        await ws.wait_done(prompt_id)
        steps = [m["data"]["value"] for m in ws.messages if m["type"] == "progress"]
        event = next(m for m in ws.messages if m["type"] == "execution_interrupted")["data"]
        assert event["node_id"] == "3"
        assert event["node_type"] == "KSampler"
        assert 1 <= len(steps) < 50


async def test_queue_clear_leaves_the_running_prompt(client: EmulatorClient) -> None:
    running_id = await hold_worker(client)
    for n in range(2):
        await client.post_prompt(solid_image(prefix=f"p{n}"))
    await client.post_json("/queue", {"clear": True})
    queue = await client.get_json("/queue")
    assert queue["queue_pending"] == []
    assert queue["queue_running"][0][1] == running_id
    await client.post_json("/emulator/release")


async def test_history_window_delete_and_clear(client: EmulatorClient) -> None:
    ids = []
    for n in range(3):
        ids.append((await client.post_prompt(solid_image(prefix=f"h{n}")))["prompt_id"])
    await client.wait_idle()
    assert list(await client.get_json("/history?max_items=2")) == ids[1:]
    assert list(await client.get_json("/history?offset=1&max_items=1")) == ids[1:2]
    await client.post_json("/history", {"delete": [ids[0]]})
    assert await client.get_json(f"/history/{ids[0]}") == {}
    await client.post_json("/history", {"clear": True})
    assert await client.get_json("/history") == {}
    async with client.session.get(client.base_url + "/history?max_items=x") as response:
        assert response.status == 500


async def test_partial_validity_runs_only_the_valid_output(client: EmulatorClient) -> None:
    prompt = solid_image()
    prompt["4"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0},
    }
    prompt["5"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["4", 0], "filename_prefix": "bad"},
    }
    response = await client.post_prompt(prompt, client_id="c")
    assert response["node_errors"]["4"]["dependent_outputs"] == ["5"]
    entry = await client.wait_for_history(response["prompt_id"])
    assert entry["prompt"][4] == ["3"]
    assert list(entry["outputs"]) == ["3"]


async def test_every_route_is_mirrored_under_api(client: EmulatorClient) -> None:
    response = await client.post_prompt(solid_image())
    assert await client.get_json("/api/history/" + response["prompt_id"]) is not None
    assert "EmptyImage" in await client.get_json("/api/object_info/EmptyImage")
    assert "queue_running" in await client.get_json("/api/queue")
    async with client.session.get(client.base_url + "/api/internal/logs") as missing:
        assert missing.status == 404


# ---- prompt ids: 0.8.0 takes anything, 0.26.0 only canonical UUIDs (protocol notes §9.1) ----

NON_CANONICAL_IDS: list[Any] = [
    12345,
    "p-1",
    "",
    "7B0C2D7E-0A8E-4A43-9A55-0F3C3D6F8C11",
    "7b0c2d7e0a8e4a439a550f3c3d6f8c11",
    "{7b0c2d7e-0a8e-4a43-9a55-0f3c3d6f8c11}",
    "urn:uuid:7b0c2d7e-0a8e-4a43-9a55-0f3c3d6f8c11",
    True,
    {"id": 1},
]
INVALID_PROMPT_ID = {
    "error": {
        "type": "invalid_prompt_id",
        "message": "prompt_id must be a valid UUID",
        "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
        "omit it to let the server generate one",
        "extra_info": {},
    },
    "node_errors": {},
}


@pytest.fixture
async def client_0_26(start: Any) -> AsyncIterator[EmulatorClient]:
    running: RunningEmulator = await start(comfyui_version="0.26.0")
    async with EmulatorClient(running.url) as client:
        yield client


@pytest.mark.parametrize("prompt_id", NON_CANONICAL_IDS)
async def test_0_8_0_accepts_any_prompt_id_stringified(
    client: EmulatorClient, prompt_id: Any
) -> None:
    response = await client.post_prompt(solid_image(), prompt_id=prompt_id)
    assert response["prompt_id"] == str(prompt_id)


async def test_0_8_0_stringifies_a_null_prompt_id(client: EmulatorClient) -> None:
    assert (await client.post_prompt(solid_image(), prompt_id=None))["prompt_id"] == "None"


@pytest.mark.parametrize("path", ["/prompt", "/api/prompt"])
@pytest.mark.parametrize("prompt_id", NON_CANONICAL_IDS)
async def test_0_26_0_rejects_a_prompt_id_that_is_not_a_canonical_uuid(
    client_0_26: EmulatorClient, path: str, prompt_id: Any
) -> None:
    body = json.dumps({"prompt": solid_image(), "prompt_id": prompt_id})
    async with client_0_26.session.post(client_0_26.base_url + path, data=body) as response:
        assert (response.status, response.content_type) == (400, "application/json")
        assert await response.json() == INVALID_PROMPT_ID
    assert await client_0_26.get_json("/queue") == {"queue_running": [], "queue_pending": []}
    assert await client_0_26.get_json("/history") == {}


async def test_0_26_0_checks_the_id_before_the_graph_and_after_the_prompt_key(
    client_0_26: EmulatorClient,
) -> None:
    invalid_graph = solid_image(width=0)
    status, body = await client_0_26.post_json("/prompt", {"prompt": invalid_graph, "prompt_id": 1})
    assert (status, body) == (400, INVALID_PROMPT_ID)
    status, body = await client_0_26.post_json("/prompt", {"prompt_id": "p-1"})
    assert (status, body["error"]["type"]) == (400, "no_prompt")
    # Both rejected requests moved the prompt counter, as any request without "number" does.
    assert (await client_0_26.post_prompt(solid_image()))["number"] == 2


async def test_0_26_0_keeps_a_canonical_id_and_mints_one_when_absent_or_null(
    client_0_26: EmulatorClient,
) -> None:
    given = str(uuid.uuid4())
    assert (await client_0_26.post_prompt(solid_image(), prompt_id=given))["prompt_id"] == given
    for fields in ({}, {"prompt_id": None}):
        minted = (await client_0_26.post_prompt(solid_image(prefix="m"), **fields))["prompt_id"]
        assert minted != "None"
        assert str(uuid.UUID(minted)) == minted
        assert uuid.UUID(minted).version == 4
    await client_0_26.wait_idle()
    assert given in await client_0_26.get_json("/history")
