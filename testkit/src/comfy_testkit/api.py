"""Small helpers for tests that drive the public API over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx

from comfy_testkit.waiting import wait_for_condition

TERMINAL = {"succeeded", "failed", "cancelled"}


async def submit(api: httpx.AsyncClient, prompt: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/generate", json={"prompt": prompt, **fields})
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def get_task(api: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def find_task(api: httpx.AsyncClient, task_id: str) -> dict[str, Any] | None:
    """The task, or None when the API does not know it (404)."""
    response = await api.get(f"/api/v1/tasks/{task_id}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    task: dict[str, Any] = response.json()
    return task


async def wait_for_status(
    api: httpx.AsyncClient, task_id: str, statuses: set[str], *, timeout_s: float = 20
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        task = await get_task(api, task_id)
        return task if task["status"] in statuses else None

    return await wait_for_condition(reached, timeout_s=timeout_s, what=f"{task_id} in {statuses}")


async def wait_until_finished(
    api: httpx.AsyncClient, task_id: str, *, timeout_s: float = 20
) -> dict[str, Any]:
    return await wait_for_status(api, task_id, TERMINAL, timeout_s=timeout_s)


async def read_sse(
    api: httpx.AsyncClient, path: str, *, last_event_id: str | None = None, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Every event of an SSE stream until the server ends it: ``{"id", "event", "data"}``."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, Any]] = []
    async with api.stream("GET", path, headers=headers, timeout=30) as response:
        assert response.status_code == 200, await response.aread()
        current: dict[str, Any] = {}
        async for line in response.aiter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                    if len(events) >= limit:
                        break
                current = {}
                continue
            key, _, value = line.partition(": ")
            if key in ("id", "event"):
                current[key] = value
            elif key == "data":
                current["data"] = json.loads(value)
    return events
