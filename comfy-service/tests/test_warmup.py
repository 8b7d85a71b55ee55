"""The warm-up gating a node's readiness, with real emulators, services, balancers and Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_service.settings import ServiceSettings
from comfy_service.warmup import load_warm_up, rejection_reason
from comfy_shared.comfyui import PromptRejected
from comfy_shared.workflows import DEFAULT_TEMPLATES_DIR, TemplateError, TemplateLibrary
from comfy_stack.ports import free_port
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import BalancerFactory, EmulatorFactory, ServiceFactory
from comfy_testkit.stack import AUTH_HEADERS, RunningComponent
from comfy_testkit.waiting import wait_for_condition

WARM_UP = ["--warmup-workflow", "demo", "--warmup-params", json.dumps({"width": 64, "height": 64})]
WARM_UP_NODE = "ImageBlur"
"""A node class only the warm-up (the demo template) runs here: its runs count warm-ups."""


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def warm_ups(control: EmulatorControl) -> int:
    return int((await control.stats())["node_runs"].get(WARM_UP_NODE, 0))


async def readiness(service: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await service.get("/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def lifecycle_check_is(service: httpx.AsyncClient, wanted: Callable[[str], bool]) -> str:
    async def reached() -> str | None:
        checks = (await readiness(service))[1]["checks"]
        return checks["lifecycle"] if wanted(checks["lifecycle"]) else None

    return await wait_for_condition(reached, timeout_s=20, what="the lifecycle check")


async def node_seen(balancer: httpx.AsyncClient, state: str) -> dict[str, Any]:
    async def seen() -> dict[str, Any] | None:
        nodes = (await balancer.get("/api/v1/nodes")).json()
        return next((n for n in nodes if n["node_id"] == "a" and n["state"] == state), None)

    return await wait_for_condition(seen, timeout_s=20, what=f"node a {state} at the balancer")


@asynccontextmanager
async def clients(
    emulator: RunningComponent, service: RunningComponent, balancer: RunningComponent
) -> AsyncIterator[tuple[EmulatorControl, httpx.AsyncClient, httpx.AsyncClient]]:
    control = EmulatorControl(emulator.url)
    async with (
        httpx.AsyncClient(base_url=service.url, headers=service.auth_headers, timeout=10) as node,
        httpx.AsyncClient(base_url=balancer.url, headers=AUTH_HEADERS, timeout=10) as api,
    ):
        yield control, node, api
    await control.aclose()


async def test_a_node_takes_no_task_until_its_warm_up_ran(
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
    start_balancer: BalancerFactory,
) -> None:
    emulator = start_emulator()
    early = EmulatorControl(emulator.url)
    await early.hang_next(1)  # the warm-up is the first prompt: it waits until released
    await early.aclose()
    service = start_service(emulator.url, node_id="a", extra_args=WARM_UP, wait_ready=False)
    balancer = start_balancer()
    async with clients(emulator, service, balancer) as (control, node, api):
        await control.wait_hung(1)
        status, body = await readiness(node)
        assert (status, body["checks"]["lifecycle"]) == (503, "warming-up")
        assert body["checks"]["comfyui"] == "ok"
        seen = await node_seen(api, "warming-up")
        assert seen["health"]["lifecycle"]["state"] == "warming-up"
        task = await submit(api, graphs.txt2img(f"w-{fresh()}", steps=2))
        refused = await node.post("/api/v1/generate", json={"prompt": graphs.txt2img("x")})
        assert (refused.status_code, refused.json()["code"]) == (503, "node_not_ready")
        assert (await api.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "queued"
        assert await warm_ups(control) == 0  # hung in its first node, not through it yet

        await control.release()

        await lifecycle_check_is(node, lambda check: check == "ok")
        done = await wait_until_finished(api, task["id"])
        assert (done["status"], done["attempts"], done["node_id"]) == ("succeeded", 1, "a")
        ready_since = (await node_seen(api, "ready"))["health"]["lifecycle"]["since"]
        dispatched = done["attempt_log"][0]["dispatched_at"]
        assert datetime.fromisoformat(dispatched) >= datetime.fromisoformat(ready_since)
        assert await warm_ups(control) == 1


async def test_a_failed_warm_up_says_why_takes_no_task_and_passes_on_retry(
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
    start_balancer: BalancerFactory,
) -> None:
    emulator = start_emulator()
    early = EmulatorControl(emulator.url)
    missing = "model file warm-up.safetensors not found"
    await early.fail_next(3, exception_type="FileNotFoundError", message=missing)
    await early.aclose()
    balancer = start_balancer()
    service = start_service(emulator.url, node_id="a", extra_args=WARM_UP, wait_ready=False)
    async with clients(emulator, service, balancer) as (control, node, api):
        failed = await lifecycle_check_is(node, lambda check: check != "warming-up")
        assert failed == f"warm-up-failed: node 1 (EmptyImage) failed: FileNotFoundError: {missing}"
        seen = await node_seen(api, "warm-up-failed")
        assert missing in seen["health"]["lifecycle"]["reason"]
        task = await submit(api, graphs.txt2img(f"f-{fresh()}", steps=2))

        await lifecycle_check_is(node, lambda check: check == "ok")  # the fourth run passes

        done = await wait_until_finished(api, task["id"])
        assert (done["status"], done["attempts"]) == ("succeeded", 1)
        outcomes = (await control.stats())["outcomes"]
        assert (outcomes["error"], outcomes["success"]) == (3, 2)  # 4 warm-ups, 1 task


async def test_after_comfyui_restarts_the_node_warms_up_again_before_any_task(
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
    start_balancer: BalancerFactory,
) -> None:
    emulator = start_emulator()
    service = start_service(emulator.url, node_id="a", extra_args=WARM_UP)  # ready: warm
    balancer = start_balancer()
    async with clients(emulator, service, balancer) as (control, node, api):
        assert await warm_ups(control) == 1
        await control.hang_next(1)  # the first prompt after the restart: the warm-up

        await control.restart()

        await control.wait_hung(1)
        assert (await readiness(node))[1]["checks"]["lifecycle"] == "warming-up"
        refused = await node.post("/api/v1/generate", json={"prompt": graphs.txt2img("x")})
        assert (refused.status_code, refused.json()["code"]) == (503, "node_not_ready")
        await control.release()
        await lifecycle_check_is(node, lambda check: check == "ok")
        assert await warm_ups(control) == 2

        await control.go_down(0.5)  # a crash: refused connections, then a new process

        async def warmed_again() -> bool:
            try:
                runs = await warm_ups(control)
            except httpx.TransportError:
                return False  # its control routes are down with it
            return runs == 3 and (await readiness(node))[0] == 200

        await wait_for_condition(warmed_again, timeout_s=20, what="a third warm-up")

        await control.drop_websockets()  # the same ComfyUI, reconnected: no warm-up

        # Its end comes over the new socket, after the reconnect was looked into.
        task = await submit(api, graphs.txt2img(f"r-{fresh()}", steps=2))
        assert (await wait_until_finished(api, task["id"]))["status"] == "succeeded"
        assert (await readiness(node))[1]["checks"]["lifecycle"] == "ok"
        stats = await control.stats()
        assert (stats["restarts"], stats["node_runs"][WARM_UP_NODE]) == (2, 3)


async def test_a_warm_up_that_hangs_times_out_and_leaves_comfyui_free(
    start_emulator: EmulatorFactory, start_service: ServiceFactory
) -> None:
    emulator = start_emulator()
    control = EmulatorControl(emulator.url)
    await control.hang_next(1)
    args = [*WARM_UP, "--warmup-timeout-s", "1"]
    service = start_service(emulator.url, node_id="a", extra_args=args, wait_ready=False)
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as node:
        failed = await lifecycle_check_is(node, lambda check: check != "warming-up")
        assert failed == "warm-up-failed: the warm-up did not finish within 1 s"
        await lifecycle_check_is(node, lambda check: check == "ok")
    # withdrawn from ComfyUI (interrupted), so the next run was not queued behind it
    assert (await control.stats())["outcomes"] == {"interrupted": 1, "success": 1}
    await control.aclose()


async def test_a_warm_up_waits_for_a_comfyui_that_is_not_up_yet(
    start_emulator: EmulatorFactory, start_service: ServiceFactory
) -> None:
    port = free_port()
    comfyui_url = f"http://127.0.0.1:{port}"
    service = start_service(comfyui_url, node_id="a", extra_args=WARM_UP, wait_ready=False)
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as node:
        failed = await lifecycle_check_is(node, lambda check: check != "warming-up")
        assert failed.startswith("warm-up-failed: ComfyUI unreachable: ")

        start_emulator(port=port)

        await lifecycle_check_is(node, lambda check: check == "ok")
    control = EmulatorControl(comfyui_url)
    assert await warm_ups(control) == 1
    await control.aclose()


def test_a_warm_up_that_cannot_run_as_configured_stops_start_up(tmp_path: Path) -> None:
    templates = TemplateLibrary.load(DEFAULT_TEMPLATES_DIR)
    with pytest.raises(TemplateError, match="no workflow template named"):
        load_warm_up("no-such-template", {}, templates)
    with pytest.raises(TemplateError, match="width"):
        load_warm_up("demo", {"width": 1}, templates)
    with pytest.raises(TemplateError, match="No such file"):
        load_warm_up(str(tmp_path / "missing.json"), {}, templates)
    graph_file = tmp_path / "warm-up.json"
    graph_file.write_text(json.dumps(graphs.txt2img("w")))
    with pytest.raises(TemplateError, match="apply to a template"):
        load_warm_up(str(graph_file), {"steps": 1}, templates)
    assert load_warm_up(str(graph_file), {}, templates).graph() == graphs.txt2img("w")
    demo = load_warm_up("demo", {"width": 64}, templates).graph()
    assert demo["1"]["inputs"]["width"] == 64
    settings = ServiceSettings(warmup_workflow="demo", warmup_params='{"width": 64}')
    assert settings.warmup_params == {"width": 64}


def test_a_rejected_warm_up_names_each_refused_node() -> None:
    rejected = PromptRejected(
        {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        {
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "errors": [{"message": "Value not in list", "details": "ckpt_name: 'x' not in []"}],
            }
        },
    )
    assert rejection_reason(rejected) == (
        "ComfyUI rejected the warm-up graph: Prompt outputs failed validation; "
        "CheckpointLoaderSimple (node 4): Value not in list: ckpt_name: 'x' not in []"
    )
