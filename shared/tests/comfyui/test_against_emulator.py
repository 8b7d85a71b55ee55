"""The client and the listener against the emulator over real HTTP and WebSocket."""

import io
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
from PIL import Image

from comfy_emulator import EmulatorConfig, start_emulator
from comfy_shared.comfyui import (
    ComfyClient,
    ComfyEventListener,
    ComfyNotFound,
    Connected,
    Executing,
    ExecutionStart,
    ListenerConfig,
    Progress,
    PromptRejected,
)
from comfy_testkit import graphs
from comfy_testkit.waiting import wait_for_condition


@pytest.fixture
async def emulator_url() -> AsyncIterator[str]:
    running = await start_emulator(EmulatorConfig(port=0, step_time=0.005))
    yield running.url
    await running.stop()


@pytest.fixture
async def comfy(emulator_url: str) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(emulator_url) as client:
        yield client


async def test_a_prompt_runs_with_progress_and_its_output_downloads(
    emulator_url: str, comfy: ComfyClient
) -> None:
    listener = ComfyEventListener(emulator_url, "client-a", ListenerConfig(ping_interval_s=None))
    seen: list[object] = []
    async with aclosing(listener.events()) as events:
        first = await anext(events)
        assert isinstance(first, Connected)
        submitted = await comfy.submit(
            graphs.txt2img("emu-int", steps=5), prompt_id="p-1", client_id="client-a"
        )
        async for event in events:
            seen.append(event)
            if isinstance(event, Executing) and event.done and event.prompt_id == "p-1":
                break

    assert submitted.prompt_id == "p-1"
    assert any(isinstance(e, ExecutionStart) for e in seen)
    assert [e.value for e in seen if isinstance(e, Progress)] == [1, 2, 3, 4, 5]
    entry = await comfy.get_history("p-1")
    assert entry is not None
    assert entry.succeeded
    [file] = entry.files()
    image = Image.open(io.BytesIO(await comfy.view(file.filename, file.subfolder, file.type)))
    assert image.size == (64, 64)


async def test_rejections_uploads_and_capabilities(comfy: ComfyClient) -> None:
    with pytest.raises(PromptRejected) as rejected:
        await comfy.submit(graphs.invalid_width("x"), prompt_id="bad", client_id="c")
    assert rejected.value.node_errors["1"]["errors"][0]["type"] == "value_smaller_than_min"

    png = io.BytesIO()
    Image.new("RGB", (10, 10), "red").save(png, format="PNG")
    upload = await comfy.upload_image(png.getvalue(), "red.png", subfolder="uploads")
    assert upload.image_ref == "uploads/red.png"
    assert await comfy.view("red.png", "uploads", "input") == png.getvalue()
    with pytest.raises(ComfyNotFound):
        await comfy.view("missing.png")

    info = await comfy.object_info()
    assert graphs.SDXL_CHECKPOINT in info["CheckpointLoaderSimple"].model_inputs()["ckpt_name"]
    assert (await comfy.system_stats()).device is not None


async def test_targeted_interrupt_stops_only_the_running_prompt(comfy: ComfyClient) -> None:
    await comfy.submit(graphs.txt2img("long", steps=2000), prompt_id="long", client_id="c")
    await comfy.submit(graphs.solid_image("next"), prompt_id="next", client_id="c")

    async def running() -> bool:
        return (await comfy.get_queue()).is_running("long")

    await wait_for_condition(running, what="long prompt running")

    await comfy.interrupt("next")  # not running: ComfyUI ignores it
    assert (await comfy.get_queue()).is_running("long")
    await comfy.interrupt("long")

    async def both_finished() -> bool:
        return all([await comfy.get_history(p) is not None for p in ("long", "next")])

    await wait_for_condition(both_finished, what="both prompts in history")
    long_entry, next_entry = await comfy.get_history("long"), await comfy.get_history("next")
    assert long_entry is not None
    assert long_entry.status is not None
    assert long_entry.status.interruption is not None
    assert next_entry is not None
    assert next_entry.succeeded
