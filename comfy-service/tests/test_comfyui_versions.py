"""The service against both ComfyUI generations the emulator plays: 0.8.0, which takes any
prompt id and has no cancel-by-job route, and 0.26.0, which refuses a prompt id that is not a
canonical UUID and cancels through ``/api/jobs/{id}/cancel``."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_testkit import graphs
from comfy_testkit.api import get_task, submit, wait_for_status, wait_until_finished
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import EmulatorFactory, ServiceFactory
from comfy_testkit.stack import RunningComponent


@pytest.fixture(params=["0.8.0", "0.26.0"])
def versioned_emulator(
    request: pytest.FixtureRequest, start_emulator: EmulatorFactory
) -> RunningComponent:
    return start_emulator(extra_args=["--comfyui-version", request.param])


@pytest.fixture
async def api(
    start_service: ServiceFactory, versioned_emulator: RunningComponent
) -> AsyncIterator[httpx.AsyncClient]:
    service = start_service(versioned_emulator.url)
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as client:
        yield client


async def test_a_task_id_that_is_no_uuid_runs_under_a_derived_prompt_id(
    api: httpx.AsyncClient, versioned_emulator: RunningComponent
) -> None:
    task_id = f"order-{uuid.uuid4().hex[:6]}"

    await submit(api, graphs.solid_image(f"v-{task_id}"), task_id=task_id)
    task = await wait_until_finished(api, task_id)

    assert task["status"] == "succeeded"
    prompt_id = task["attempt_log"][0]["prompt_id"]
    assert prompt_id == prompt_id_for(task_id, 1)
    async with httpx.AsyncClient(base_url=versioned_emulator.url) as comfy:
        assert prompt_id in (await comfy.get(f"/history/{prompt_id}")).json()


async def test_cancel_stops_exactly_the_task_s_prompt(
    api: httpx.AsyncClient, versioned_emulator: RunningComponent
) -> None:
    running = await submit(api, graphs.txt2img(f"c-{uuid.uuid4().hex[:6]}", steps=300))
    waiting = await submit(api, graphs.solid_image(f"w1-{uuid.uuid4().hex[:6]}"))
    behind = await submit(api, graphs.solid_image(f"w2-{uuid.uuid4().hex[:6]}"))
    await wait_for_status(api, running["id"], {"running"})

    for task in (waiting, running):
        response = await api.delete(f"/api/v1/tasks/{task['id']}")
        assert response.json()["status"] == "cancelled"

    assert (await wait_until_finished(api, behind["id"]))["status"] == "succeeded"
    for task in (waiting, running):
        cancelled = await get_task(api, task["id"])
        assert (cancelled["status"], cancelled["error"], cancelled["outputs"]) == (
            "cancelled", None, [],
        )  # fmt: skip
        assert cancelled["attempt_log"][-1]["outcome"] == "cancelled"
    control = EmulatorControl(versioned_emulator.url)
    try:
        assert await control.executions(prompt_id_for(waiting["id"], 1)) == 0  # dequeued
        assert await control.executions(prompt_id_for(behind["id"], 1)) == 1
    finally:
        await control.aclose()
