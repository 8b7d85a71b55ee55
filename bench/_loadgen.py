"""An open-loop load generator, meant to run in its own process (see ``run_load``).

Requests leave on a fixed schedule (``rate`` per second), whether or not earlier ones were
answered, and each latency is counted from the request's scheduled time, so a slow server
(or a late client) cannot hide its queueing. The generator also reports its own CPU use and
how late it sent, to show that it is not the bottleneck.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import httpx

from comfy_testkit.graphs import solid_image
from comfy_testkit.stack import AUTH_HEADERS

Kind = Literal["comfyui-submit", "api-submit", "comfyui-read", "api-read"]
"""What to send: ComfyUI's ``POST /prompt`` / ``GET /history/{id}``, or the comfy-stack API's
``POST /api/v1/generate`` / ``GET /api/v1/tasks/{id}`` (service and balancer alike)."""


@dataclass(frozen=True)
class LoadPlan:
    base_url: str
    kind: Kind
    rate: float  # requests per second
    duration_s: float
    ids: tuple[str, ...] = ()  # what reads read, in turn
    warmup: int = 20  # unmeasured requests first (opens the connections)
    headers: tuple[tuple[str, str], ...] = ()  # e.g. a service's internal token


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)  # answered 2xx
    send_lag_ms: list[float] = field(default_factory=list)  # actual minus scheduled send
    errors: dict[str, int] = field(default_factory=dict)  # status code or exception name
    ids: list[str] = field(default_factory=list)  # ids created by measured submits
    accepted: int = 0  # 2xx submits, warm-up included (each one will run)
    sent: int = 0
    wall_s: float = 0.0  # first scheduled send to last answer
    cpu_s: float = 0.0  # this process, over the measured part


def run_load(plan: LoadPlan) -> LoadResult:
    """Entry point in the load generator process."""
    return asyncio.run(_drive(plan))


async def _drive(plan: LoadPlan) -> LoadResult:
    result = LoadResult()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=plan.base_url,
        headers={**AUTH_HEADERS, **dict(plan.headers)},
        timeout=30,
        limits=limits,
    ) as client:
        for index in range(plan.warmup):
            await _send(client, plan, index, result, measured=False)
        loop = asyncio.get_running_loop()
        cpu_before = time.process_time()
        first_due = loop.time() + 0.05
        sends: list[asyncio.Task[None]] = []
        for index in range(round(plan.rate * plan.duration_s)):
            due = first_due + index / plan.rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            result.send_lag_ms.append((loop.time() - due) * 1000)
            sends.append(asyncio.create_task(_timed(client, plan, index, result, due)))
        await asyncio.gather(*sends)
        result.wall_s = loop.time() - first_due
        result.cpu_s = time.process_time() - cpu_before
        result.sent = len(sends)
    return result


async def _timed(
    client: httpx.AsyncClient, plan: LoadPlan, index: int, result: LoadResult, due: float
) -> None:
    if await _send(client, plan, index, result, measured=True):
        result.latencies_ms.append((asyncio.get_running_loop().time() - due) * 1000)


async def _send(
    client: httpx.AsyncClient, plan: LoadPlan, index: int, result: LoadResult, *, measured: bool
) -> bool:
    """One request; True if answered 2xx. Failures are counted, never raised."""
    try:
        response = await _request(client, plan, index)
    except httpx.HTTPError as exc:
        _count(result, type(exc).__name__)
        return False
    if not response.is_success:
        _count(result, _error_name(response))
        return False
    if plan.kind.endswith("submit"):
        result.accepted += 1
        if measured:
            result.ids.append(_created_id(response, plan.kind))
    return True


async def _request(client: httpx.AsyncClient, plan: LoadPlan, index: int) -> httpx.Response:
    if plan.kind.endswith("submit"):
        # A fresh prefix each time: ComfyUI would serve an identical graph from its cache.
        prompt_id = str(uuid.uuid4())
        graph = solid_image(f"load/{prompt_id}")
        if plan.kind == "api-submit":
            return await client.post("/api/v1/generate", json={"prompt": graph})
        body = {"prompt": graph, "client_id": "load", "prompt_id": prompt_id}
        return await client.post("/prompt", json=body)
    task_id = plan.ids[index % len(plan.ids)]
    if plan.kind == "comfyui-read":
        return await client.get(f"/history/{task_id}")
    return await client.get(f"/api/v1/tasks/{task_id}")


def _created_id(response: httpx.Response, kind: Kind) -> str:
    body = response.json()
    return str(body["prompt_id"] if kind == "comfyui-submit" else body["id"])


def _error_name(response: httpx.Response) -> str:
    """The status code, with the API's stable error code when the body has one."""
    try:
        code = response.json().get("code")
    except ValueError:
        code = None
    return f"{response.status_code} {code}" if isinstance(code, str) else str(response.status_code)


def _count(result: LoadResult, error: str) -> None:
    result.errors[error] = result.errors.get(error, 0) + 1
