"""``GET /api/v1/tasks/{id}/logs``: one task's timeline, served the same by every process."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_logs import format_task_log, read_task_log
from comfy_shared.task_store import TaskStore

LogFormat = Literal["text", "json"]


async def task_log_response(
    redis: Redis, keys: RedisKeys, store: TaskStore, task_id: str, output: LogFormat
) -> Response:
    """The balancer's, the services' and ComfyUI's lines about the task, in time order:
    plain text by default, a JSON list with ``format=json``. 404 for an unknown task."""
    await store.get(task_id)
    records = await read_task_log(redis, keys, task_id)
    if output == "json":
        return JSONResponse(records)
    return PlainTextResponse(format_task_log(records))
