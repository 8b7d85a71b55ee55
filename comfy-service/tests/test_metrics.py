"""GET /metrics on a real service and emulator: behind the internal token, the node's
gauges, and the outcome of each task the service ended counted once."""

import uuid

import httpx

from comfy_shared.model_family import name_hash8
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.metrics import Samples, scrape, value
from comfy_testkit.plugin import EmulatorFactory, ServiceFactory
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition


async def test_a_finished_task_is_counted_with_the_node_gauges(api: httpx.AsyncClient) -> None:
    prompt_text = f"a-secret-prompt-{uuid.uuid4().hex[:8]}"
    task = await submit(api, graphs.txt2img(prompt_text))
    await wait_until_finished(api, task["id"])

    async def node_up() -> Samples | None:
        _, samples = await scrape(api)
        return samples if value(samples, "comfy_node_up", node="node-a") == 1 else None

    samples = await wait_for_condition(node_up, what="the node's ComfyUI seen up")
    text, _ = await scrape(api)
    finished = value(samples, "comfy_tasks_finished_total", tenant="default", workflow="graph",
                     status="succeeded")  # fmt: skip
    assert finished == 1
    assert value(samples, "comfy_task_e2e_seconds_count", workflow="graph") == 1
    assert value(samples, "comfy_node_queue_remaining", node="node-a") == 0
    assert (value(samples, "comfy_node_ram_rss_bytes", node="node-a") or 0) > 10_000_000
    assert value(samples, "comfy_stream_clients", kind="sse") == 0  # the task's stream ended
    assert value(samples, "comfy_stream_clients", kind="ws") is None  # no WebSocket here
    assert prompt_text not in text
    assert task["id"] not in text


async def test_a_failed_task_is_counted_by_its_error_type(api: httpx.AsyncClient) -> None:
    ran = await submit(api, graphs.runtime_error(f"e-{uuid.uuid4().hex[:8]}"))
    await wait_until_finished(api, ran["id"])
    refused = await api.post("/api/v1/generate", json={"prompt": graphs.invalid_width("v")})
    assert refused.status_code == 422

    _, samples = await scrape(api)

    failed = {"tenant": "default", "workflow": "graph", "status": "failed"}
    assert value(samples, "comfy_tasks_finished_total", **failed, reason="comfyui") == 1
    assert value(samples, "comfy_tasks_finished_total", **failed, reason="validation") == 1
    assert value(samples, "comfy_tasks_finished_total", **failed) is None  # never without one


async def test_metrics_need_the_internal_token(service: RunningComponent) -> None:
    async with httpx.AsyncClient(base_url=service.url) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
        assert "/metrics" not in (await anonymous.get("/openapi.json")).json()["paths"]


async def test_a_model_load_is_timed_and_the_loaded_model_shown_by_family_and_hash(
    start_emulator: EmulatorFactory, start_service: ServiceFactory
) -> None:
    model = graphs.SDXL_CHECKPOINT
    loads_slowly = ["--load-scale", "1", "--model-cost", f"{model}=1.5:6900"]
    service = start_service(start_emulator(extra_args=loads_slowly).url)
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as api:
        task = await submit(api, graphs.txt2img(f"s-{uuid.uuid4().hex[:8]}", steps=2))
        await wait_until_finished(api, task["id"])
        loaded = {"node": "node-a", "model_family": "sdxl", "model_hash8": name_hash8(model)}

        async def shown() -> Samples | None:
            _, samples = await scrape(api)
            return samples if value(samples, "comfy_node_loaded_model_info", **loaded) else None

        samples = await wait_for_condition(shown, what="the model shown loaded")
        text, _ = await scrape(api)

    switch = {"node": "node-a", "model_family": "sdxl"}
    assert value(samples, "comfy_model_switch_seconds_count", **switch) == 1
    assert (value(samples, "comfy_model_switch_seconds_sum", **switch) or 0) > 1.0
    assert model not in text
