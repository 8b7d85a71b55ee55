"""Prompt execution over HTTP/WS: caching, events, KSampler, outputs and runtime errors."""

from __future__ import annotations

import io
import json
import os
import re
import struct
from typing import Any

import aiohttp
import pytest
from PIL import Image

from comfy_emulator import RunningEmulator
from comfy_emulator.executor import paced_deadline
from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import runtime_error, solid_image, text_to_image


async def stats(client: EmulatorClient) -> dict[str, Any]:
    result: dict[str, Any] = await client.get_json("/emulator/stats")
    return result


async def view(client: EmulatorClient, image: dict[str, str]) -> Image.Image:
    params = {"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}
    async with client.session.get(client.base_url + "/view", params=params) as response:
        assert response.status == 200
        return Image.open(io.BytesIO(await response.read()))


async def upload(client: EmulatorClient, name: str, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    form = aiohttp.FormData()
    form.add_field("image", buffer.getvalue(), filename=name, content_type="image/png")
    form.add_field("overwrite", "true")
    async with client.session.post(client.base_url + "/upload/image", data=form) as response:
        assert response.status == 200


async def test_a_repeat_is_served_from_cache_with_the_old_files(
    emulator: RunningEmulator, client: EmulatorClient
) -> None:
    async with client.websocket("c") as ws:
        first = (await client.post_prompt(solid_image(), client_id="c"))["prompt_id"]
        await ws.wait_done(first)
        second = (await client.post_prompt(solid_image(), client_id="c"))["prompt_id"]
        events = await ws.wait_done(second)
    cached = [m["data"]["nodes"] for m in events if m["type"] == "execution_cached"]
    assert cached == [["1", "2", "3"]]
    assert [m["data"]["node"] for m in events if m["type"] == "executing"] == [None]
    old = (await client.history(first))[first]["outputs"]
    assert (await client.history(second))[second]["outputs"] == old
    assert os.listdir(emulator.emulator.services.folders.output + "/emu") == ["solid_00001_.png"]


async def test_cached_outputs_reach_history_only_with_a_client_id(client: EmulatorClient) -> None:
    await client.post_prompt(solid_image(), client_id="c")
    again = (await client.post_prompt(solid_image()))["prompt_id"]
    entry = await client.wait_for_history(again)
    assert (entry["outputs"], entry["meta"], entry["status"]["status_str"]) == ({}, {}, "success")


async def test_a_new_prefix_reruns_only_saveimage(client: EmulatorClient) -> None:
    await client.post_prompt(solid_image(prefix="a"))
    await client.post_prompt(solid_image(prefix="b"))
    await client.wait_idle()
    assert (await stats(client))["node_runs"] == {"EmptyImage": 1, "ImageInvert": 1, "SaveImage": 2}


async def test_new_file_content_invalidates_loadimage(client: EmulatorClient) -> None:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    for color in ("red", "blue", "blue"):
        await upload(client, "in.png", Image.new("RGB", (8, 8), color))
        await client.post_prompt(prompt)
        await client.wait_idle()
    assert (await stats(client))["node_runs"]["LoadImage"] == 2


async def test_free_memory_drops_the_cache(client: EmulatorClient) -> None:
    await client.post_prompt(solid_image())
    await client.wait_idle()
    await client.post_json("/free", {"free_memory": True})
    await client.post_prompt(solid_image())
    await client.wait_idle()
    assert (await stats(client))["node_runs"]["EmptyImage"] == 2
    assert (await stats(client))["frees"] == {"free_memory": 1}


async def test_ksampler_reports_every_step(client: EmulatorClient) -> None:
    async with client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(text_to_image(steps=7), client_id="c"))["prompt_id"]
        events = await ws.wait_done(prompt_id)
    progress = [m["data"] for m in events if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [
        (n, 7, "3") for n in range(1, 8)
    ]
    running = [
        m["data"]["nodes"]["3"]
        for m in events
        if m["type"] == "progress_state" and "3" in m["data"]["nodes"]
    ]
    assert running[-1]["state"] == "finished"
    assert running[-1]["value"] == 7


async def test_generation_is_deterministic(start: Any) -> None:
    pixels = []
    for seed in (1, 1, 2):
        running: RunningEmulator = await start()
        async with EmulatorClient(running.url) as client:
            prompt_id = (
                await client.post_prompt(
                    text_to_image(seed=seed, steps=2, width=128, height=96), client_id="c"
                )
            )["prompt_id"]
            entry = await client.wait_for_history(prompt_id)
            image = await view(client, entry["outputs"]["9"]["images"][0])
            assert image.size == (128, 96)
            pixels.append(image.convert("RGB").tobytes())
    assert pixels[0] == pixels[1] != pixels[2]


async def test_img2img_and_lora_graph_runs(client: EmulatorClient) -> None:
    await upload(client, "photo.png", Image.new("RGB", (100, 60), "green"))
    prompt = text_to_image(steps=2)
    prompt["5"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    prompt["11"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "add-detail-xl.safetensors",
            "strength_model": 0.8,
            "strength_clip": 1,
        },
    }
    prompt["3"]["inputs"].update(model=["11", 0], denoise=0.5)
    prompt["6"]["inputs"]["clip"] = ["11", 1]
    prompt_id = (await client.post_prompt(prompt, client_id="c"))["prompt_id"]
    entry = await client.wait_for_history(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert (await view(client, entry["outputs"]["9"]["images"][0])).size == (96, 56)


async def test_previews_follow_the_feature_flags(client: EmulatorClient) -> None:
    async with client.websocket("old") as old, client.websocket("new") as new:
        await new.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        await new.wait_for(lambda m: m["type"] == "feature_flags")
        for seed, (ws, sid) in enumerate(((old, "old"), (new, "new"))):
            prompt = text_to_image(steps=3, seed=seed, width=64, height=64)
            prompt_id = (
                await client.post_prompt(
                    prompt, client_id=sid, extra_data={"preview_method": "auto"}
                )
            )["prompt_id"]
            await ws.wait_done(prompt_id)
    assert [struct.unpack(">II", f[:8]) for f in old.binary] == [(1, 1)] * 3  # PREVIEW_IMAGE, JPEG
    kinds = {struct.unpack(">I", f[:4])[0] for f in new.binary}
    assert kinds == {4}
    frame = new.binary[0]
    (length,) = struct.unpack(">I", frame[4:8])
    meta = json.loads(frame[8 : 8 + length])
    assert meta["node_id"] == "3"
    assert meta["image_type"] == "image/jpeg"
    Image.open(io.BytesIO(frame[8 + length :])).verify()


async def test_runtime_errors_are_reported_like_comfyui(client: EmulatorClient) -> None:
    async with client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(runtime_error(), client_id="c"))["prompt_id"]
        events = await ws.wait_done(prompt_id)
    error = next(m["data"] for m in events if m["type"] == "execution_error")
    assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "ImageToMask", ["1"])
    assert error["exception_type"] == "IndexError"
    assert error["exception_message"] == "index 3 is out of bounds for dimension 3 with size 3\n"
    assert error["current_inputs"]["channel"] == ["alpha"]
    assert error["current_inputs"]["image"][0].startswith("tensor(")
    assert sorted(error["current_outputs"]) == ["1", "2", "3", "4"]
    entry = (await client.history(prompt_id))[prompt_id]
    assert (entry["outputs"], entry["status"]["status_str"]) == ({}, "error")
    logs = await client.get_json("/internal/logs")
    assert "!!! Exception during processing !!! index 3 is out of bounds" in logs


async def test_saved_pngs_carry_metadata_and_previews_go_to_temp(client: EmulatorClient) -> None:
    prompt = solid_image(prefix="jobs/abc/out")
    prompt["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    workflow = {"id": "wf-1"}
    response = await client.post_prompt(
        prompt, client_id="c", extra_data={"extra_pnginfo": {"workflow": workflow}}
    )
    entry = await client.wait_for_history(response["prompt_id"])
    saved = entry["outputs"]["3"]["images"][0]
    assert (saved["filename"], saved["subfolder"], saved["type"]) == (
        "out_00001_.png",
        "jobs/abc",
        "output",
    )
    image = await view(client, saved)
    assert json.loads(image.info["prompt"])["3"]["inputs"]["filename_prefix"] == "jobs/abc/out"
    assert json.loads(image.info["workflow"]) == workflow
    preview = entry["outputs"]["4"]["images"][0]
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", preview["filename"])
    assert (preview["subfolder"], preview["type"]) == ("", "temp")
    assert sorted(entry["meta"]) == ["3", "4"]


async def test_saving_outside_the_output_folder_is_an_execution_error(
    client: EmulatorClient,
) -> None:
    prompt_id = (await client.post_prompt(solid_image(prefix="../../escape"), client_id="c"))[
        "prompt_id"
    ]
    entry = await client.wait_for_history(prompt_id)
    event = entry["status"]["messages"][-1]
    assert event[0] == "execution_error"
    assert event[1]["node_id"] == "3"


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        (0.0, 100.0, 100.2),  # the first step: from now
        (100.2, 100.2, 100.4),  # on time
        (100.4, 100.45, 100.6),  # 50 ms late (a busy host): the next step is shorter
        (100.6, 100.7, 100.8),  # a whole step late: made up, just
        (100.8, 101.5, 101.7),  # a stall longer than a step: not made up in a burst
    ],
)
def test_steps_are_paced_against_a_deadline(previous: float, now: float, expected: float) -> None:
    assert paced_deadline(previous, now, 0.2) == pytest.approx(expected)
