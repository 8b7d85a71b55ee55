"""comfy-service when things go wrong: ComfyUI faults, dropped sockets, restarts, hangs."""

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from comfy_shared.models import NodeHealth
from comfy_shared.redis_keys import RedisKeys
from comfy_stack.ports import free_port
from comfy_stack.processes import start_python_module
from comfy_stack.waiting import ConditionTimeout
from comfy_testkit import graphs
from comfy_testkit.api import get_task, submit, wait_for_status, wait_until_finished
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.line_listener import LineListener
from comfy_testkit.plugin import EmulatorFactory, ServiceFactory
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def test_injected_out_of_memory_fails_the_task_with_type_comfyui(
    api: httpx.AsyncClient, control: EmulatorControl
) -> None:
    await control.fail_next(1)
    accepted = await submit(api, graphs.txt2img(f"oom-{fresh()}", steps=3))

    task = await wait_until_finished(api, accepted["id"])

    assert task["status"] == "failed"
    assert task["error"]["type"] == "comfyui"
    assert task["error"]["details"]["exception_type"] == "torch.OutOfMemoryError"
    assert "out of memory" in task["error"]["message"]


async def test_websocket_dropped_mid_task_and_the_task_still_completes(
    api: httpx.AsyncClient, control: EmulatorControl
) -> None:
    accepted = await submit(api, graphs.txt2img(f"ws-{fresh()}", steps=40))
    await wait_for_status(api, accepted["id"], {"running"})

    await control.drop_websockets()

    task = await wait_until_finished(api, accepted["id"])
    assert task["status"] == "succeeded"
    assert len(task["outputs"]) == 1
    assert await control.executions(accepted["id"]) == 1


async def test_comfyui_restart_mid_task_fails_it_with_type_service(
    api: httpx.AsyncClient, control: EmulatorControl
) -> None:
    accepted = await submit(api, graphs.txt2img(f"rs-{fresh()}", steps=200))
    await wait_for_status(api, accepted["id"], {"running"})

    await control.restart()

    task = await wait_until_finished(api, accepted["id"])
    assert task["status"] == "failed"
    assert task["error"]["type"] == "service"
    assert "no longer knows" in task["error"]["message"]


async def test_service_restarted_mid_task_reports_the_result(
    start_service: ServiceFactory, emulator: RunningComponent, control: EmulatorControl
) -> None:
    first = start_service(emulator.url)
    async with httpx.AsyncClient(base_url=first.url, headers=first.auth_headers) as api:
        accepted = await submit(api, graphs.txt2img(f"sr-{fresh()}", steps=60))
        await wait_for_status(api, accepted["id"], {"running"})
    first.kill()

    second = start_service(emulator.url)
    async with httpx.AsyncClient(base_url=second.url, headers=second.auth_headers) as api:
        task = await wait_until_finished(api, accepted["id"])

    assert task["status"] == "succeeded"
    assert len(task["outputs"]) == 1
    assert await control.executions(accepted["id"]) == 1


async def test_service_restarted_after_the_task_finished_unseen_still_reports_it(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    first = start_service(emulator.url)
    async with httpx.AsyncClient(base_url=first.url, headers=first.auth_headers) as api:
        accepted = await submit(api, graphs.txt2img(f"un-{fresh()}", steps=30))
        await wait_for_status(api, accepted["id"], {"running"})
    first.kill()
    async with httpx.AsyncClient(base_url=emulator.url) as comfy:
        await wait_for_condition(
            lambda: _in_history(comfy, accepted["id"]), what="prompt finished in comfyui"
        )

    second = start_service(emulator.url)
    async with httpx.AsyncClient(base_url=second.url, headers=second.auth_headers) as api:
        task = await wait_until_finished(api, accepted["id"])
    assert task["status"] == "succeeded"


async def _in_history(comfy: httpx.AsyncClient, prompt_id: str) -> bool:
    return bool((await comfy.get(f"/history/{prompt_id}")).json())


async def test_watchdog_fails_a_task_that_stops_making_progress(
    start_service: ServiceFactory, emulator: RunningComponent, control: EmulatorControl
) -> None:
    service = start_service(emulator.url, extra_args=["--stall-timeout-s", "1"])
    await control.hang_next(1)
    async with httpx.AsyncClient(base_url=service.url, headers=service.auth_headers) as api:
        hanging = await submit(api, graphs.txt2img(f"h-{fresh()}", steps=5))
        behind = await submit(api, graphs.solid_image(f"hb-{fresh()}"))

        task = await wait_until_finished(api, hanging["id"])
        next_task = await wait_until_finished(api, behind["id"])

    assert task["status"] == "failed"
    assert task["error"]["type"] == "service"
    assert task["error"]["details"]["limit"] == "stall_timeout_s"
    assert next_task["status"] == "succeeded"  # the hung prompt was interrupted


async def test_watchdog_fails_a_task_past_its_overall_limit(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    service = start_service(emulator.url, extra_args=["--task-timeout-s", "1"])
    async with httpx.AsyncClient(base_url=service.url, headers=service.auth_headers) as api:
        slow = await submit(api, graphs.txt2img(f"t-{fresh()}", steps=1000))
        task = await wait_until_finished(api, slow["id"])

    assert task["status"] == "failed"
    assert task["error"]["details"]["limit"] == "task_timeout_s"


async def test_comfyui_unreachable_at_submit_is_503_and_keeps_nothing(
    start_service: ServiceFactory, emulator: RunningComponent, control: EmulatorControl
) -> None:
    service = start_service(emulator.url)
    await control.go_down(30)
    async with httpx.AsyncClient(base_url=service.url, headers=service.auth_headers) as api:
        task_id = f"down-{fresh()}"
        response = await api.post(
            "/api/v1/generate", json={"prompt": graphs.solid_image("x"), "task_id": task_id}
        )
        assert (response.status_code, response.json()["code"]) == (503, "comfyui_unavailable")
        assert response.json()["type"] == "service"
        assert (await api.get(f"/api/v1/tasks/{task_id}")).status_code == 404

        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["comfyui"].startswith("unreachable")


async def test_a_task_comfyui_accepts_just_after_an_outage_is_not_failed_for_the_outage(
    start_service: ServiceFactory, start_emulator: EmulatorFactory
) -> None:
    # The service starts while its ComfyUI is down and probes it only every 30 s, so its last
    # probe says "down for longer than the grace" well after ComfyUI is back.
    port = free_port()
    service = start_service(
        f"http://127.0.0.1:{port}",
        extra_args=["--health-interval-s", "30", "--comfyui-down-grace-s", "0.5"],
        wait_ready=False,
    )
    start_emulator(port=port)
    async with httpx.AsyncClient(base_url=service.url, headers=service.auth_headers) as api:
        task = await submit(api, graphs.txt2img(f"back-{fresh()}", steps=200))
        done = await wait_until_finished(api, task["id"], timeout_s=20)

    assert done["status"] == "succeeded", done["error"]


async def test_after_a_long_comfyui_outage_the_service_follows_its_tasks_again_at_once(
    api: httpx.AsyncClient, control: EmulatorControl
) -> None:
    # Long enough that a reconnect backoff doubling towards 30 s would keep the WebSocket
    # away for many seconds after ComfyUI is back, while tasks already reach it over HTTP.
    await control.go_down(12)

    async def back() -> bool:
        return (await api.get("/readyz")).status_code == 200

    await wait_for_condition(back, timeout_s=30, what="comfyui back")
    task = await submit(api, graphs.txt2img(f"after-{fresh()}", steps=300))

    async def steps_seen() -> bool:  # only the WebSocket reports sampler steps
        progress = (await get_task(api, task["id"]))["progress"] or {}
        return bool(progress.get("max", 0) > 1 and progress.get("value", 0) >= 1)

    await wait_for_condition(steps_seen, timeout_s=4, what="its progress followed again")


async def test_health_document_has_the_documented_fields_and_goes_on_shutdown(
    start_service: ServiceFactory, emulator: RunningComponent, redis: Redis
) -> None:
    service = start_service(emulator.url, node_id="gpu-7")

    async def published() -> bytes | str | None:
        return await redis.get(KEYS.node_health("gpu-7"))

    health = NodeHealth.model_validate_json(await wait_for_condition(published))

    assert health.node_id == "gpu-7"
    assert health.url == service.url
    assert health.comfyui.reachable
    assert health.comfyui.vram_total_bytes
    assert health.ram_total_bytes > 0
    assert health.gpus == []  # no NVIDIA GPU on a test machine
    assert "KSampler" in health.capabilities.node_classes
    assert (
        graphs.SDXL_CHECKPOINT in health.capabilities.models["CheckpointLoaderSimple"]["ckpt_name"]
    )
    assert 0 < await redis.ttl(KEYS.node_health("gpu-7")) <= 2

    service.stop()  # SIGTERM: a graceful shutdown
    assert "comfy-service stopped" in service.process.output()
    assert await redis.exists(KEYS.node_health("gpu-7")) == 0


async def test_health_key_expires_when_the_service_dies(
    start_service: ServiceFactory, emulator: RunningComponent, redis: Redis
) -> None:
    service = start_service(emulator.url, node_id="gpu-8")
    await wait_for_condition(lambda: redis.exists(KEYS.node_health("gpu-8")))

    service.kill()

    await wait_for_condition(
        lambda: _gone(redis, KEYS.node_health("gpu-8")), timeout_s=5, what="health key expired"
    )


async def _gone(redis: Redis, key: str) -> bool:
    return await redis.exists(key) == 0


async def test_health_reports_comfyui_down(
    start_service: ServiceFactory,
    emulator: RunningComponent,
    control: EmulatorControl,
    redis: Redis,
) -> None:
    start_service(emulator.url, node_id="gpu-9")
    await control.go_down(30)

    async def reports_down() -> bool:
        raw = await redis.get(KEYS.node_health("gpu-9"))
        return raw is not None and not NodeHealth.model_validate_json(raw).comfyui.reachable

    await wait_for_condition(reports_down, what="health says comfyui unreachable")


async def test_queue_position_counts_the_prompts_ahead(
    api: httpx.AsyncClient,
) -> None:
    ahead = await submit(api, graphs.txt2img(f"q1-{fresh()}", steps=100))
    second = await submit(api, graphs.solid_image(f"q2-{fresh()}"))
    third = await submit(api, graphs.solid_image(f"q3-{fresh()}"))

    assert (await get_task(api, second["id"]))["queue_position"] == 1
    assert (await get_task(api, third["id"]))["queue_position"] == 2
    await api.delete(f"/api/v1/tasks/{ahead['id']}")
    await wait_until_finished(api, third["id"])


async def test_bodies_over_the_limit_are_413_whether_declared_or_streamed(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    service = start_service(emulator.url, extra_args=["--max-body-bytes", "2000"])
    big = {"prompt": graphs.solid_image("x"), "client": {"padding": "x" * 5000}}
    async with httpx.AsyncClient(base_url=service.url, headers=service.auth_headers) as api:
        declared = await api.post("/api/v1/generate", json=big)

        async def chunks() -> AsyncIterator[bytes]:
            body = json.dumps(big).encode()
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        streamed = await api.post(
            "/api/v1/generate", content=chunks(), headers={"content-type": "application/json"}
        )
        small = await api.post("/api/v1/generate", json={"prompt": graphs.solid_image("y")})

    assert (declared.status_code, declared.json()["code"]) == (413, "body_too_large")
    assert (streamed.status_code, streamed.json()["code"]) == (413, "body_too_large")
    assert small.status_code == 202


def test_a_broken_template_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
    (tmp_path / "bad.yaml").write_text("params: {w: {type: int, targets: [{node: '7', input: x}]}}")

    process = start_python_module(
        "service", "comfy_service", ["--templates-dir", str(tmp_path)], log_dir=tmp_path
    )

    assert process.process.wait(timeout=30) == 2
    assert "bad.yaml: params.w.targets.0: node '7' is not in the graph" in process.output()


async def test_health_reports_the_speed_measured_and_a_slow_restart_keeps_it(
    start_service: ServiceFactory, start_emulator: EmulatorFactory, redis: Redis
) -> None:
    emulator = start_emulator("slow-emulator", step_time_s=0.05)
    service = start_service(emulator.url, node_id="gpu-10")
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as api:
        # The first run loads the checkpoint (a switch, not overhead); the second is hot.
        for seed in (1, 2):
            accepted = await submit(api, graphs.txt2img(f"sp-{fresh()}", steps=10, seed=seed))
            assert (await wait_until_finished(api, accepted["id"]))["status"] == "succeeded"

    async def measured() -> NodeHealth | None:
        raw = await redis.get(KEYS.node_health("gpu-10"))
        health = NodeHealth.model_validate_json(raw) if raw else None
        return health if health and health.speed else None

    before = await wait_for_condition(measured, what="speed in the health document")
    assert before.speed is not None
    assert before.speed.tasks_measured == 1
    assert 0.04 < before.speed.seconds_per_step < 0.2  # 50 ms per emulated step
    assert before.speed.overhead_s < 1.0
    assert before.profile.resident == [graphs.SDXL_CHECKPOINT]
    assert len(before.profile.shape_run_s) == 1

    service.kill()
    # A restart slower than the health TTL: the health document is gone, the speed is not.
    await wait_for_condition(lambda: _gone(redis, KEYS.node_health("gpu-10")), what="expiry")
    start_service(emulator.url, node_id="gpu-10")

    async def republished() -> NodeHealth | None:
        health = await measured()
        return health if health and health.started_at > before.started_at else None

    after = await wait_for_condition(republished, what="health of the restarted service")
    assert after.speed == before.speed
    # What was learned stays; which models ComfyUI holds is not known after a restart.
    assert after.profile == before.profile.model_copy(update={"resident": []})


async def test_past_its_submit_limit_a_node_answers_503_overloaded_at_once(
    start_service: ServiceFactory, redis: Redis
) -> None:
    with LineListener(read=False) as stalled_comfyui:  # accepts, never answers
        service = start_service(
            f"http://127.0.0.1:{stalled_comfyui.port}",
            node_id="gpu-11",
            extra_args=["--max-concurrent-submits", "1", "--comfyui-timeout-s", "30"],
            wait_ready=False,
        )
        async with httpx.AsyncClient(
            base_url=service.url, headers=service.auth_headers, timeout=40
        ) as api:
            slow_id = f"slow-{fresh()}"
            body = {"task_id": slow_id, "prompt": graphs.solid_image("slow")}
            first = asyncio.create_task(api.post("/api/v1/generate", json=body))
            # Its record is written just before the call to ComfyUI, which never answers.
            await wait_for_condition(
                lambda: redis.exists(KEYS.task(slow_id)), what="the first submit waiting"
            )
            # Without the limit this would wait for the same silent ComfyUI (30 s).
            second = await api.post(
                "/api/v1/generate", json={"prompt": graphs.solid_image("refused")}
            )
            first.cancel()

    assert second.status_code == 503
    assert second.json()["code"] == "overloaded"
    assert second.json()["type"] == "service"
    assert second.headers["retry-after"] == "1"


async def test_a_service_whose_port_is_taken_exits_at_once_without_starting_up(
    start_service: ServiceFactory, redis: Redis
) -> None:
    # Binding first means its clients never reach a half-started service, nor whoever holds
    # the port while the service starts up behind it.
    node_id = f"taken-{fresh()}"
    with socket.create_server(("127.0.0.1", free_port())) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(ConditionTimeout, match="cannot listen") as failed:
            start_service("http://127.0.0.1:9", node_id=node_id, port=port, wait_ready=False)

    assert "exited with 1" in str(failed.value)
    assert await redis.exists(KEYS.node_health(node_id)) == 0
