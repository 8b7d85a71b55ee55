"""The WebSocket session: handshake, routing of events, quirks, logs and TEXT frames."""

from __future__ import annotations

import re
import struct
from typing import Any

from comfy_emulator import RunningEmulator
from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import blur_chain, solid_image


async def test_greeting_carries_a_generated_sid(client: EmulatorClient) -> None:
    async with client.websocket() as ws:
        greeting = await ws.wait_for(lambda m: m["type"] == "status")
    assert greeting["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
    assert re.fullmatch(r"[0-9a-f]{32}", greeting["data"]["sid"])


async def test_feature_flags_are_answered_only_as_the_first_frame(client: EmulatorClient) -> None:
    async with client.websocket("c", path="/api/ws") as ws:
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        reply = await ws.wait_for(lambda m: m["type"] == "feature_flags")
        await ws.send_json({"type": "feature_flags", "data": {}})
        await ws.send_json("not an object")
        prompt_id = (await client.post_prompt(solid_image(), client_id="c"))["prompt_id"]
        await ws.wait_done(prompt_id)
    assert reply["data"]["max_upload_size"] == 104857600
    assert ws.types().count("feature_flags") == 1


async def test_events_without_a_client_id_are_broadcast_or_dropped(client: EmulatorClient) -> None:
    async with client.websocket("watcher") as ws:
        prompt_id = (await client.post_prompt(solid_image()))["prompt_id"]
        await ws.wait_for(
            lambda m: (
                m["type"] == "status"
                and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
                and "sid" not in m["data"]
            )
        )
        await client.wait_for_history(prompt_id)
    assert set(ws.types()) == {"status", "progress_state"}


async def test_reconnect_quirk_silences_the_new_socket(
    emulator: RunningEmulator, client: EmulatorClient
) -> None:
    old = client.websocket("same")
    await old.__aenter__()
    async with client.websocket("same") as new:
        await new.wait_for(lambda m: m["type"] == "status")
        await old.close()  # its cleanup removes the sid the new socket now uses
        prompt_id = (await client.post_prompt(solid_image(), client_id="same"))["prompt_id"]
        await client.wait_for_history(prompt_id)
        await emulator.emulator.state.hub.wait_drained()
        assert new.types() == ["status"]


async def test_reconnecting_owner_is_told_the_executing_node(client: EmulatorClient) -> None:
    await client.post_json("/emulator/hang-next")
    prompt_id = (await client.post_prompt(solid_image(), client_id="owner"))["prompt_id"]
    await client.wait_running(prompt_id)
    async with client.websocket("owner") as ws:
        told = await ws.wait_for(lambda m: m["type"] == "executing")
    assert told["data"] == {"node": "1"}
    await client.post_json("/emulator/release")


async def test_get_image_size_broadcasts_a_text_frame(client: EmulatorClient) -> None:
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 40, "height": 30, "batch_size": 2, "color": 0},
        },
        "4": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "5": {
            "class_type": "EmptyImage",
            "inputs": {"width": ["4", 0], "height": 8, "batch_size": 1, "color": 0},
        },
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "size"}},
    }
    async with client.websocket("someone-else") as ws:
        prompt_id = (await client.post_prompt(prompt, client_id="owner"))["prompt_id"]
        await client.wait_for_history(prompt_id)
        await ws.wait_for(
            lambda m: (
                m["type"] == "status"
                and m["data"]["status"]["exec_info"]["queue_remaining"] == 0
                and "sid" not in m["data"]
            )
        )
    (frame,) = ws.binary
    assert frame[:9] == struct.pack(">II", 3, 1) + b"4"
    assert frame[9:].decode() == "width: 40, height: 30\n batch size: 2"


async def test_log_subscription_pushes_new_lines(client: EmulatorClient) -> None:
    async with client.websocket("tail") as ws:
        await ws.wait_for(lambda m: m["type"] == "status")
        async with client.session.patch(
            client.base_url + "/internal/logs/subscribe", json={"clientId": "tail", "enabled": True}
        ) as response:
            assert response.status == 200
        await client.post_prompt(solid_image())
        await ws.wait_for(
            lambda m: (
                m["type"] == "logs"
                and m["data"]["entries"][0]["m"].startswith("Prompt executed in")
            )
        )
    logs = [m["data"] for m in ws.messages if m["type"] == "logs"]
    assert logs[0]["entries"][0]["m"] == "got prompt\n"
    assert logs[0]["size"] == {"cols": 80, "rows": 24}
    assert logs[1]["size"] is None


async def test_a_chain_runs_in_dependency_order(start: Any) -> None:
    running: RunningEmulator = await start(node_time={"ImageBlur": 0.01})
    async with EmulatorClient(running.url) as client, client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(blur_chain(8), client_id="c"))["prompt_id"]
        events = await ws.wait_done(prompt_id)
    assert [m["data"]["node"] for m in events if m["type"] == "executing"] == [
        "1", "10", "11", "12", "13", "14", "15", "16", "17", "99", None,
    ]  # fmt: skip
