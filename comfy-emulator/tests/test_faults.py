"""Fault injection under /emulator/* and the execution statistics."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from comfy_emulator import RunningEmulator
from comfy_emulator.executor import PromptRun
from comfy_emulator.faults import OOM_TIPS, OOM_TYPE
from comfy_emulator.testing import EmulatorClient, wait_until
from comfy_emulator.workflows import solid_image, text_to_image


async def last_message(client: EmulatorClient, prompt_id: str) -> list[Any]:
    entry = await client.wait_for_history(prompt_id)
    message: list[Any] = entry["status"]["messages"][-1]
    return message


async def test_fail_next_raises_a_cuda_oom_in_the_first_node(client: EmulatorClient) -> None:
    status, faults = await client.post_json("/emulator/fail-next", {"count": 2})
    assert status == 200
    assert faults["fail_next"] == 2
    failed = [
        (await client.post_prompt(solid_image(prefix=f"f{n}")))["prompt_id"] for n in range(2)
    ]
    ok = (await client.post_prompt(solid_image(prefix="ok")))["prompt_id"]
    for prompt_id in failed:
        event, data = await last_message(client, prompt_id)
        assert event == "execution_error"
        assert data["exception_type"] == OOM_TYPE
        assert data["node_id"] == "1"
        assert data["exception_message"].startswith("CUDA out of memory.")
        assert data["exception_message"].endswith("\n" + OOM_TIPS)
    assert (await last_message(client, ok))[0] == "execution_success"


async def test_fail_next_with_a_custom_exception_even_when_cached(client: EmulatorClient) -> None:
    await client.post_prompt(solid_image())
    await client.wait_idle()
    await client.post_json(
        "/emulator/fail-next", {"exception_type": "RuntimeError", "message": "boom"}
    )
    prompt_id = (await client.post_prompt(solid_image()))["prompt_id"]
    event, data = await last_message(client, prompt_id)
    assert (event, data["exception_type"], data["exception_message"]) == (
        "execution_error",
        "RuntimeError",
        "boom\n",
    )


async def test_hang_until_released(client: EmulatorClient) -> None:
    await client.post_json("/emulator/hang-next", {"count": 1})
    async with client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(solid_image(), client_id="c"))["prompt_id"]
        await ws.wait_for(lambda m: m["type"] == "executing" and m["data"].get("node") == "1")
        assert (await client.get_json("/emulator/stats"))["faults"]["hung_now"] == 1
        assert await client.history(prompt_id) == {}
        _, released = await client.post_json("/emulator/release")
        assert released == {"released": 1}
        await ws.wait_done(prompt_id)
    assert (await last_message(client, prompt_id))[0] == "execution_success"


async def test_hang_until_interrupted(client: EmulatorClient) -> None:
    await client.post_json("/emulator/hang-next")
    prompt_id = (await client.post_prompt(solid_image()))["prompt_id"]
    await client.wait_running(prompt_id)
    await client.post_json("/interrupt", {"prompt_id": prompt_id})
    event, data = await last_message(client, prompt_id)
    assert (event, data["node_id"], data["executed"]) == ("execution_interrupted", "1", [])


@pytest.mark.parametrize("mode", ["close", "abort"])
async def test_drop_websockets(client: EmulatorClient, mode: str) -> None:
    async with client.websocket("a") as first, client.websocket("b") as second:
        await first.wait_for(lambda m: m["type"] == "status")
        await second.wait_for(lambda m: m["type"] == "status")
        _, body = await client.post_json("/emulator/drop-websockets", {"mode": mode})
        assert body == {"dropped": 2}
        await first.wait_closed()
        await second.wait_closed()


async def test_restart_loses_everything_held_in_memory(
    emulator: RunningEmulator, client: EmulatorClient
) -> None:
    done = (await client.post_prompt(solid_image()))["prompt_id"]
    await client.wait_for_history(done)
    await client.post_json("/emulator/hang-next")
    running = (await client.post_prompt(solid_image(prefix="r")))["prompt_id"]
    await client.post_prompt(solid_image(prefix="pending"))
    await client.wait_running(running)
    async with client.websocket("c") as ws:
        await ws.wait_for(lambda m: m["type"] == "status")
        status, body = await client.post_json("/emulator/restart")
        assert (status, body) == (200, {"restarts": 1})
        await ws.wait_closed()
    assert await client.get_json("/queue") == {"queue_running": [], "queue_pending": []}
    assert await client.get_json("/history") == {}
    assert (await client.post_prompt(solid_image()))["number"] == 0  # counter restarted
    await client.wait_idle()
    stats = await client.get_json("/emulator/stats")
    assert (stats["executions"][done], stats["executions"][running], stats["restarts"]) == (1, 1, 1)
    assert stats["node_runs"]["EmptyImage"] == 2  # the cache was lost too
    assert "got prompt\n" in [
        e["m"] for e in (await client.get_json("/internal/logs/raw"))["entries"]
    ]


async def test_down_refuses_connections_then_comes_back(emulator: RunningEmulator) -> None:
    async with EmulatorClient(emulator.url) as client:
        prompt_id = (await client.post_prompt(solid_image()))["prompt_id"]
        await client.wait_for_history(prompt_id)
        status, body = await client.post_json("/emulator/down", {"seconds": 0.3})
        assert (status, body) == (200, {"down_for": 0.3, "keep_state": False})
    async with EmulatorClient(emulator.url) as client:
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.get_json("/queue")

        async def back() -> bool:
            try:
                return bool(await client.get_json("/history") == {})
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(back, timeout_s=5)


async def test_down_keeping_state(emulator: RunningEmulator) -> None:
    async with EmulatorClient(emulator.url) as client:
        prompt_id = (await client.post_prompt(solid_image()))["prompt_id"]
        await client.wait_for_history(prompt_id)
        await client.post_json("/emulator/down", {"seconds": 0.2, "keep_state": True})
    async with EmulatorClient(emulator.url) as client:

        async def back() -> bool:
            try:
                return prompt_id in await client.history(prompt_id)
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(back, timeout_s=5)


async def test_speed_scales_sampler_time(start: Any) -> None:
    running: RunningEmulator = await start(step_time=0.05)
    async with EmulatorClient(running.url) as client:
        status, body = await client.post_json("/emulator/speed", {"speed": 100})
        assert (status, body) == (200, {"speed": 100.0})
        began = time.monotonic()
        prompt_id = (await client.post_prompt(text_to_image(steps=20)))["prompt_id"]
        await client.wait_for_history(prompt_id)
        assert time.monotonic() - began < 0.6  # 1 s of steps at speed 1
        status, _ = await client.post_json("/emulator/speed", {"speed": 0})
        assert status == 400


async def test_timing_can_be_changed_at_run_time(client: EmulatorClient) -> None:
    status, body = await client.post_json(
        "/emulator/timing",
        {"step_time": 0.01, "node_time": {"ImageBlur": 0.5}, "load_scale": 0.5},
    )
    assert status == 200
    assert body == {
        "speed": 1.0,
        "step_time": 0.01,
        "node_time": {"ImageBlur": 0.5},
        "load_scale": 0.5,
    }
    status, body = await client.post_json("/emulator/timing", {"node_time": {"ImageBlur": -1}})
    assert status == 400
    assert "error" in body


async def test_stats_count_executions_per_prompt(client: EmulatorClient) -> None:
    ids = [(await client.post_prompt(solid_image(prefix=f"s{n}")))["prompt_id"] for n in range(3)]
    await client.wait_idle()
    stats = await client.get_json("/emulator/stats")
    assert stats["executions"] == dict.fromkeys(ids, 1)
    assert stats["total_executions"] == 3
    assert stats["outcomes"] == {"success": 3}
    await client.post_json("/emulator/stats/reset")
    assert (await client.get_json("/emulator/stats"))["executions"] == {}


async def test_faults_configured_at_start(start: Any) -> None:
    running: RunningEmulator = await start(fail_next=1)
    async with EmulatorClient(running.url) as client:
        prompt_id = (await client.post_prompt(solid_image()))["prompt_id"]
        assert (await last_message(client, prompt_id))[1]["exception_type"] == OOM_TYPE
        status, _ = await client.post_json("/emulator/fail-next", {"count": -1})
        assert status == 400


async def test_a_prompt_that_breaks_the_executor_fails_alone_and_the_worker_runs_on(
    client: EmulatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of the emulator's (here: the run raising once) fails that prompt only."""
    real_run = PromptRun.run
    broken_once: list[str] = []

    async def run_or_break(self: PromptRun) -> Any:
        if not broken_once:
            broken_once.append(self.prompt_id)
            raise RuntimeError("a bug in the emulator")
        return await real_run(self)

    monkeypatch.setattr(PromptRun, "run", run_or_break)
    async with client.websocket("c") as ws:
        broken = (await client.post_prompt(solid_image(prefix="b"), client_id="c"))["prompt_id"]
        await ws.wait_for(
            lambda m: m["type"] == "executing" and m["data"] == {"node": None, "prompt_id": broken}
        )
    after = (await client.post_prompt(solid_image(prefix="after")))["prompt_id"]

    entry = await client.wait_for_history(broken)
    assert broken_once == [broken]
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    assert (await last_message(client, after))[0] == "execution_success"
