"""Out of memory on ComfyUI: the node frees it (POST /free) before the failure is reported,
and the task runs again, with real emulators, services, a balancer and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from comfy_service.memory import is_out_of_memory
from comfy_shared.models import ErrorType, TaskError
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.metrics import scrape, value
from comfy_testkit.waiting import wait_for_condition

FREED = "comfyui out of memory; models unloaded and caches freed (POST /free)"


async def test_out_of_memory_frees_the_node_before_the_task_runs_again(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"])
    await cluster.nodes_ready(1)
    node = cluster.node("a")
    await node.control.fail_next(1)  # torch.OutOfMemoryError, as ComfyUI reports it
    task = await submit(cluster.api, graphs.txt2img(f"m-{uuid.uuid4().hex[:8]}", steps=5))

    done = await wait_until_finished(cluster.api, task["id"])

    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert "out of memory" in done["attempt_log"][0]["outcome"]
    stats = await node.control.stats()
    assert stats["frees"] == {"unload_models": 1, "free_memory": 1}
    assert stats["outcomes"] == {"error": 1, "success": 1}

    async def freed_in_timeline() -> list[dict[str, Any]] | None:
        path = f"/api/v1/tasks/{task['id']}/logs"
        records: list[dict[str, Any]] = (
            await cluster.api.get(path, params={"format": "json"})
        ).json()
        return [r for r in records if r["message"] == FREED] or None

    (freed,) = await wait_for_condition(freed_in_timeline, what="the free in the timeline")
    assert (freed["node"], freed["level"]) == ("a", "WARNING")
    async with httpx.AsyncClient(
        base_url=node.service.url, headers=node.service.auth_headers, timeout=10
    ) as service:
        samples = (await scrape(service))[1]
    assert value(samples, "comfy_node_out_of_memory_frees_total", node="a") == 1


def test_only_out_of_memory_errors_free_the_node() -> None:
    def comfy_error(exception_type: str, message: str) -> TaskError:
        details = {"exception_type": exception_type, "exception_message": message}
        return TaskError(type=ErrorType.COMFYUI, message=message, details=details)

    assert is_out_of_memory(comfy_error("torch.OutOfMemoryError", "CUDA out of memory."))
    assert is_out_of_memory(comfy_error("RuntimeError", "MPS backend out of memory (MPS ...)"))
    assert not is_out_of_memory(comfy_error("ValueError", "width must be a multiple of 8"))
    assert not is_out_of_memory(TaskError(type=ErrorType.SERVICE, message="no progress for 600 s"))
