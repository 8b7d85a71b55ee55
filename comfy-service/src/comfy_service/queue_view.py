"""Where a waiting task stands in ComfyUI's queue, for status reads."""

from __future__ import annotations

import time

from comfy_shared.comfyui import ComfyClient, ComfyUnavailable, QueueState
from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_shared.models import TaskRecord
from comfy_shared.task_state import TaskStatus

_WAITING = (TaskStatus.QUEUED, TaskStatus.DISPATCHED)
QUEUE_SNAPSHOT_S = 0.25


class QueueView:
    def __init__(self, comfy: ComfyClient, node_id: str) -> None:
        self._comfy = comfy
        self._node_id = node_id
        self._snapshot: tuple[float, QueueState] | None = None

    async def position(self, task: TaskRecord) -> int | None:
        """Prompts ahead of this task's in ComfyUI's queue, while it waits there."""
        if task.status not in _WAITING or task.node_id != self._node_id:
            return None
        try:
            queue = await self._recent_queue()
        except ComfyUnavailable:
            return None
        return queue.position(prompt_id_for(task.id, task.attempts))

    async def _recent_queue(self) -> QueueState:
        """ComfyUI's queue, at most QUEUE_SNAPSHOT_S old: status reads of many waiting tasks
        then cost one request to ComfyUI, not one each."""
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot[0] > QUEUE_SNAPSHOT_S:
            self._snapshot = (now, await self._comfy.get_queue())
        return self._snapshot[1]
