"""A service whose Redis goes away and comes back: nothing ComfyUI did meanwhile is lost."""

import signal
import time

import httpx
import pytest

from comfy_shared.comfyui import ComfyClient
from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_for_status
from comfy_testkit.plugin import EmulatorFactory, ServiceFactory
from comfy_testkit.restartable_redis import RestartableRedis
from comfy_testkit.waiting import wait_for_condition

RECORDED_WITHIN_S = 3.0
"""Well below the safety-net reconciliation's default interval (15 s)."""


@pytest.fixture
def redis_url(restartable_redis: RestartableRedis) -> str:
    """Every process of the test uses the Redis the test kills (overrides the testkit's)."""
    return restartable_redis.url


async def test_a_task_that_ends_while_redis_is_down_is_recorded_once_redis_is_back(
    restartable_redis: RestartableRedis,
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
) -> None:
    emulator = start_emulator()
    service = start_service(emulator.url)
    async with (
        httpx.AsyncClient(base_url=service.url, headers=service.auth_headers, timeout=10) as api,
        ComfyClient(emulator.url, timeout=5) as comfy,
    ):
        task = await submit(api, graphs.txt2img("outage", steps=30))
        await wait_for_status(api, task["id"], {"running"})
        restartable_redis.crash(signal.SIGKILL)

        async def ended_in_comfyui() -> bool:
            entry = await comfy.get_history(prompt_id_for(task["id"], 1))
            return entry is not None and entry.succeeded

        await wait_for_condition(ended_in_comfyui, what="the prompt done while redis is down")
        restartable_redis.start_again()
        back = time.monotonic()

        await wait_for_status(api, task["id"], {"succeeded"}, timeout_s=RECORDED_WITHIN_S)
        recorded_s = time.monotonic() - back

        async def ready() -> bool:
            return (await api.get("/readyz")).status_code == 200

        await wait_for_condition(ready, timeout_s=RECORDED_WITHIN_S, what="/readyz 200 again")
    assert recorded_s < RECORDED_WITHIN_S
