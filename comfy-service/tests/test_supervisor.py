"""``--comfyui-command``: the service starts its ComfyUI (the emulator, a real process) as a
child, starts it again when it dies, logs its output and stops it when the service stops."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from redis.asyncio import Redis

from comfy_shared.models import NodeHealth, NodeReadiness
from comfy_shared.redis_keys import RedisKeys
from comfy_stack.ports import free_port
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.metrics import scrape, value
from comfy_testkit.plugin import BalancerFactory, ServiceFactory
from comfy_testkit.supervised import Supervised, start_supervised
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()
pytestmark = pytest.mark.timeout(120)  # real processes, some started more than once


@pytest.fixture
async def supervised(start_service: ServiceFactory, tmp_path: Path) -> Supervised:
    return await start_supervised(start_service, tmp_path / "comfyui")


@pytest.fixture
async def api(supervised: Supervised) -> AsyncIterator[httpx.AsyncClient]:
    service = supervised.service
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as client:
        yield client


async def health(redis: Redis, node_id: str = "node-a") -> NodeHealth | None:
    raw = await redis.get(KEYS.node_health(node_id))
    return NodeHealth.model_validate_json(raw) if raw else None


async def restarted(redis: Redis, supervised: Supervised, restarts: int) -> psutil.Process:
    """Wait until the node published ``restarts`` restarts with its ComfyUI answering."""

    async def answering_after_restart() -> bool:
        node = await health(redis)
        return (
            node is not None
            and node.lifecycle.comfyui_restarts == restarts
            and node.lifecycle.state is NodeReadiness.READY
            and node.comfyui.reachable
        )

    await wait_for_condition(answering_after_restart, timeout_s=20, what=f"restart {restarts}")
    return supervised.comfyui()


async def run_task(api: httpx.AsyncClient) -> dict[str, Any]:
    accepted = await submit(api, graphs.txt2img(f"sup-{uuid.uuid4().hex[:8]}", steps=3))
    return await wait_until_finished(api, accepted["id"])


async def test_a_comfyui_that_dies_is_started_again_with_backoff(
    supervised: Supervised, api: httpx.AsyncClient, redis: Redis
) -> None:
    first = supervised.comfyui()
    assert "comfy_emulator" in first.cmdline()
    assert (await run_task(api))["status"] == "succeeded"

    os.kill(first.pid, signal.SIGKILL)
    second = await restarted(redis, supervised, 1)
    os.kill(second.pid, signal.SIGKILL)  # dies again at once: a longer wait
    third = await restarted(redis, supervised, 2)

    assert len({first.pid, second.pid, third.pid}) == 3
    exits = supervised.logged("comfyui exited")
    assert [(e["exit_code"], e["restart_in_s"]) for e in exits] == [(-9, 1.0), (-9, 2.0)]
    assert [r["restarts"] for r in supervised.logged("comfyui started")] == [0, 1, 2]
    _, samples = await scrape(api)
    assert value(samples, "comfy_node_restarts_total", node="node-a", reason="died") == 2
    assert value(samples, "comfy_node_restarts_total", node="node-a", reason="recycled") == 0
    task = await run_task(api)  # as soon as the node is ready again: its lines are named
    assert task["status"] == "succeeded"
    assert len(await executed_lines(api, task["id"])) == 1


async def executed_lines(api: httpx.AsyncClient, task_id: str) -> list[str]:
    """ComfyUI's "Prompt executed in ..." lines in the task's log, once there is one (the
    log is written to Redis in the background)."""

    async def logged() -> list[str]:
        response = await api.get(f"/api/v1/tasks/{task_id}/logs", params={"format": "json"})
        comfyui = [r["message"] for r in response.json() if r.get("source") == "comfyui"]
        return [line for line in comfyui if line.startswith("Prompt executed in")]

    return await wait_for_condition(logged, timeout_s=5, what="comfyui's lines in the task log")


async def test_comfyui_output_reaches_the_service_log_and_the_task_log(
    supervised: Supervised, api: httpx.AsyncClient
) -> None:
    greeting = f"To see the GUI go to: {supervised.comfyui_url}"
    (line,) = supervised.logged(greeting)
    assert (line["source"], line["level"]) == ("comfyui", "INFO")

    task = await run_task(api)

    assert len(await executed_lines(api, task["id"])) == 1  # not also from the WebSocket


async def test_a_task_running_when_comfyui_dies_is_run_again(
    supervised: Supervised, start_balancer: BalancerFactory, redis: Redis
) -> None:
    balancer = start_balancer()
    control = EmulatorControl(supervised.comfyui_url)
    async with httpx.AsyncClient(
        base_url=balancer.url, headers=balancer.auth_headers, timeout=10
    ) as api:
        await control.hang_next(1)
        accepted = await submit(api, graphs.txt2img(f"died-{uuid.uuid4().hex[:8]}", steps=3))
        await control.wait_hung(1)
        await control.aclose()
        os.kill(supervised.comfyui().pid, signal.SIGKILL)

        task = await wait_until_finished(api, accepted["id"], timeout_s=30)

    assert task["status"] == "succeeded"
    first, second = task["attempt_log"]
    assert first["outcome"].startswith("failed"), first
    assert "ComfyUI no longer knows this task" in first["outcome"], first
    assert second["outcome"] == "succeeded"
    assert (await health(redis) or pytest.fail("no health")).lifecycle.comfyui_restarts == 1


async def test_stopping_the_service_stops_its_comfyui(supervised: Supervised) -> None:
    comfyui = supervised.comfyui()

    supervised.service.stop()

    assert not _alive(comfyui)
    (stopped,) = supervised.logged("comfyui stopped")
    assert stopped["exit_code"] == 0  # the emulator stops cleanly on SIGTERM


async def test_a_killed_service_takes_its_comfyui_along(supervised: Supervised) -> None:
    comfyui = supervised.comfyui()

    supervised.service.kill()

    async def gone() -> bool:
        return not _alive(comfyui)

    await wait_for_condition(gone, timeout_s=10, what="comfyui gone")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_a_command_that_cannot_start_is_named_by_readyz(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "no-comfyui-here"
    service = start_service(
        f"http://127.0.0.1:{free_port()}",
        extra_args=["--comfyui-command", f"{missing} --port 8188"],
        wait_ready=False,
    )
    async with httpx.AsyncClient(base_url=service.url) as client:

        async def named() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get("/readyz")).json()
            return body if "comfyui-process" in body["loops"] else None

        readiness = await wait_for_condition(named, what="the loop named")
    assert readiness["loops"]["comfyui-process"]["error"].startswith("FileNotFoundError")
    assert service.process.is_running()  # it goes on trying, with its backoff


async def test_a_restarted_comfyui_warms_up_once_before_any_task(
    start_service: ServiceFactory, tmp_path: Path, redis: Redis
) -> None:
    warm_up = ["--warmup-workflow", "demo", "--warmup-params", '{"width": 64, "height": 64}']
    node = await start_supervised(start_service, tmp_path / "comfyui", *warm_up)
    assert await warm_ups(node) == 1

    os.kill(node.comfyui().pid, signal.SIGKILL)
    await restarted(redis, node, 1)  # ready again: its warm-up passed

    assert await warm_ups(node) == 1  # in the new ComfyUI: requested at the restart, run once
    async with httpx.AsyncClient(
        base_url=node.service.url, headers=node.service.auth_headers, timeout=10
    ) as api:
        assert (await run_task(api))["status"] == "succeeded"


async def warm_ups(node: Supervised) -> int:
    """Warm-ups the running ComfyUI ran: only the demo template runs ImageBlur here."""
    control = EmulatorControl(node.comfyui_url)
    try:
        return int((await control.stats())["node_runs"].get("ImageBlur", 0))
    finally:
        await control.aclose()
