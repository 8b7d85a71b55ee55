"""Follows ComfyUI's WebSocket events and mirrors them onto the tasks in Redis.

Only events about tasks this node owns are used; ComfyUI may run prompts of other clients
too. The end of a prompt is taken from ``executing`` with ``node: null``, which ComfyUI sends
after the history entry is written, and the outcome is then read from history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from loguru import logger

from comfy_service.owned_tasks import OwnedTasks
from comfy_service.record_changes import started, with_progress
from comfy_service.runner import TaskRunner
from comfy_shared.comfyui import (
    Connected,
    Executing,
    ExecutionStart,
    ListenerEvent,
    Progress,
)
from comfy_shared.task_store import TaskStore


class EventTracker:
    def __init__(
        self,
        *,
        runner: TaskRunner,
        store: TaskStore,
        owned: OwnedTasks,
        on_connected: Callable[[], Awaitable[object]],
    ) -> None:
        self._runner = runner
        self._store = store
        self._owned = owned
        self._on_connected = on_connected

    async def handle(self, event: ListenerEvent) -> None:
        if isinstance(event, Connected):
            logger.info("comfyui websocket connected; reconciling tasks")
            await self._on_connected()
            return
        prompt_id = getattr(event, "prompt_id", None)
        if not isinstance(prompt_id, str) or not await self._is_ours(prompt_id):
            return
        self._owned.touch(prompt_id)
        with logger.contextualize(task_id=prompt_id):
            await self._apply(prompt_id, event)

    async def _apply(self, task_id: str, event: ListenerEvent) -> None:
        if isinstance(event, ExecutionStart):
            await self._store.update(task_id, started)
            logger.info("task running")
        elif isinstance(event, Executing) and event.done:
            await self._runner.finish(task_id)
        elif isinstance(event, Executing):
            node = event.node
            await self._store.update(task_id, lambda r: with_progress(r, node, 0, 0), "progress")
        elif isinstance(event, Progress):
            node, value, maximum = event.node, int(event.value), int(event.max)
            await self._store.update(
                task_id, lambda r: with_progress(r, node, value, maximum), "progress"
            )

    async def _is_ours(self, task_id: str) -> bool:
        record = await self._store.find(task_id)
        return record is not None and record.node_id == self._runner.node_id
