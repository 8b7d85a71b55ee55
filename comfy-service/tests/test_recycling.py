"""Recycling a supervised ComfyUI: when it is due (a table), and a recycle through a balancer
that loses no task and runs none twice (real processes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from comfy_service.recycling import MB, RecycleDue, RecyclePolicy, rss_bytes
from comfy_service.settings import ServiceSettings
from comfy_shared.models import NodeHealth
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.metrics import scrape, value
from comfy_testkit.plugin import BalancerFactory, ServiceFactory
from comfy_testkit.supervised import start_supervised
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()


def test_due_after_n_tasks_since_the_last_start() -> None:
    due = RecycleDue(RecyclePolicy(after_tasks=3))
    due.tasks_ended(2, None)
    assert due.reason() is None
    due.tasks_ended(1, None)
    assert due.reason() == "after 3 tasks"
    due.started()
    assert due.reason() is None


@pytest.mark.parametrize(
    ("rss_mb", "reason"),
    [
        ([900, 950, 1000], None),  # 100 MB above its warm level: not more than the limit
        ([900, 950, 1001], "memory grew 101 MB since it was warm"),
        ([900, 1200, 950], None),  # a peak that went away
        ([500, 2000], "memory grew 1500 MB since it was warm"),
    ],
)
def test_due_when_memory_grew_past_its_warm_level(rss_mb: list[int], reason: str | None) -> None:
    due = RecycleDue(RecyclePolicy.of(None, 100))
    for mb in rss_mb:
        due.tasks_ended(1, mb * MB)
    assert due.reason() == reason


def test_memory_is_read_from_the_child() -> None:
    assert (rss_bytes(os.getpid()) or 0) > 10 * MB
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    assert rss_bytes(gone.pid) is None
    assert rss_bytes(None) is None


def test_recycling_needs_a_comfyui_of_the_service() -> None:
    with pytest.raises(ValidationError, match="needs comfyui_command"):
        ServiceSettings(recycle_after_tasks=100)
    settings = ServiceSettings(recycle_after_tasks=100, comfyui_command="python main.py")
    assert settings.comfyui_argv == ["python", "main.py"]


@pytest.mark.timeout(120)  # three processes start, one of them twice
async def test_a_recycle_through_a_balancer_loses_no_task_and_runs_none_twice(
    start_service: ServiceFactory, start_balancer: BalancerFactory, tmp_path: Path, redis: Redis
) -> None:
    node = await start_supervised(start_service, tmp_path / "comfyui", "--recycle-after-tasks", "3")
    balancer = start_balancer()
    async with httpx.AsyncClient(
        base_url=balancer.url, headers=balancer.auth_headers, timeout=10
    ) as api:
        states: list[str] = []
        watcher = asyncio.create_task(watch_state(api, states))
        accepted = [await submit(api, graphs.txt2img(f"recycle/t{i}", steps=5)) for i in range(8)]
        tasks = [await wait_until_finished(api, t["id"], timeout_s=60) for t in accepted]

        async def recycled_and_ready() -> bool:
            raw = await redis.get(KEYS.node_health("node-a"))
            restarts = NodeHealth.model_validate_json(raw).lifecycle.comfyui_restarts if raw else 0
            return restarts >= 1 and states[-1:] == ["ready"]

        await wait_for_condition(recycled_and_ready, timeout_s=20, what="recycled, then ready")
        watcher.cancel()
    async with httpx.AsyncClient(
        base_url=node.service.url, headers=node.service.auth_headers
    ) as service:
        _, samples = await scrape(service)

    assert [(t["status"], t["attempts"]) for t in tasks] == [("succeeded", 1)] * 8
    outputs = node.data_dir / "output" / "recycle"
    assert [len(list(outputs.glob(f"t{i}_*.png"))) for i in range(8)] == [1] * 8
    recycles = node.logged("recycled comfyui")
    assert recycles
    assert all(r["reason"].startswith("after ") for r in recycles)
    assert "recycling" in states, states
    restarts = {reason: value(samples, "comfy_node_restarts_total", node="node-a", reason=reason)
                for reason in ("died", "recycled")}  # fmt: skip
    assert restarts["died"] == 0
    assert (restarts["recycled"] or 0) >= 1
    assert states[states.index("recycling") :].count("ready") >= 1, states


async def watch_state(api: httpx.AsyncClient, states: list[str]) -> None:
    """Every state the balancer shows for the node, each change once."""
    while True:
        nodes: list[dict[str, Any]] = (await api.get("/api/v1/nodes")).json()
        state = next((n["state"] for n in nodes if n["node_id"] == "node-a"), None)
        if state is not None and (not states or states[-1] != state):
            states.append(state)
        await asyncio.sleep(0.02)
