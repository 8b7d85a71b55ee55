"""A real service shipping its logs to a TCP listener standing in for logdy."""

import json
import time
import uuid

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.line_listener import LineListener
from comfy_testkit.plugin import ServiceFactory
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition_sync


async def test_comfyui_lines_reach_logdy_tagged_with_their_task(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    with LineListener() as logdy:
        service = start_service(emulator.url, extra_args=["--logdy", f"127.0.0.1:{logdy.port}"])
        async with httpx.AsyncClient(base_url=service.url, headers=service.auth_headers) as api:
            task = await submit(api, graphs.txt2img(f"l-{uuid.uuid4().hex[:8]}", steps=3))
            await wait_until_finished(api, task["id"])

        def comfy_lines() -> list[dict[str, str]]:
            records = [json.loads(line) for line in logdy.lines]
            return [r for r in records if r.get("source") == "comfyui" and r["task_id"]]

        tagged = wait_for_condition_sync(comfy_lines, what="comfyui lines in logdy")
    assert {r["task_id"] for r in tagged} == {task["id"]}
    assert {(r["service"], r["node"]) for r in tagged} == {("service", "node-a")}


async def test_a_stalled_logdy_does_not_slow_requests(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    with LineListener(read=False) as stalled:
        service = start_service(
            emulator.url,
            extra_args=["--logdy", f"127.0.0.1:{stalled.port}", "--log-level", "DEBUG"],
        )
        async with httpx.AsyncClient(base_url=service.url, headers=service.auth_headers) as api:
            slowest = 0.0
            for index in range(150):  # every task writes several lines that logdy never reads
                started = time.perf_counter()
                await submit(api, graphs.solid_image(f"s-{index}-{uuid.uuid4().hex[:6]}"))
                slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5
    # The sink-level test (shared/tests/test_log_shipping.py) fills the socket buffers for sure.
