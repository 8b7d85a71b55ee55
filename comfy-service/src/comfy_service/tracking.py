"""Follows ComfyUI's WebSocket events and mirrors them onto the tasks in Redis.

Only events about tasks this node owns are used; ComfyUI may run prompts of other clients
too. The end of a prompt is taken from ``executing`` with ``node: null``, which ComfyUI sends
after the history entry is written, and the outcome is then read from history.

ComfyUI's own log lines arrive on the same socket (after subscribing on every connection) and
are logged again with ``source=comfyui`` and the ``task_id`` of the prompt running when they
were written, so they join that task's timeline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from comfy_service.owned_tasks import OwnedTasks
from comfy_service.record_changes import started, with_progress
from comfy_service.runner import TaskRunner
from comfy_service.speed import SpeedMeter
from comfy_shared.comfyui import (
    ComfyClient,
    ComfyError,
    Connected,
    Executing,
    ExecutionStart,
    ListenerEvent,
    Logs,
    Progress,
)
from comfy_shared.task_store import TaskChange, TaskStore

_PROGRESS_BAR = re.compile(r"^\s*\d+%\|")
_SUMMARY_GRACE_S = 2.0
PROGRESS_WRITE_INTERVAL_S = 0.05
"""A task's progress is stored at most this often (each write is a record update and an
event); a node's last step is always stored. Fast samplers report hundreds of steps a second."""


class EventTracker:
    def __init__(
        self,
        *,
        runner: TaskRunner,
        store: TaskStore,
        owned: OwnedTasks,
        comfy: ComfyClient,
        on_connected: Callable[[], Awaitable[object]],
        speed: SpeedMeter,
    ) -> None:
        self._runner = runner
        self._store = store
        self._owned = owned
        self._comfy = comfy
        self._on_connected = on_connected
        self._speed = speed
        self._running: str | None = None
        self._finished: tuple[str, float] | None = None  # last prompt that ended, and when
        self._progress_written: dict[str, float] = {}

    async def handle(self, event: ListenerEvent) -> None:
        if isinstance(event, Connected):
            logger.info("comfyui websocket connected; reconciling tasks")
            self._speed.forget_runs()
            await self._subscribe_to_comfy_logs(event.client_id)
            await self._on_connected()
            return
        if isinstance(event, Logs):
            self._relog(event)
            return
        prompt_id = getattr(event, "prompt_id", None)
        if not isinstance(prompt_id, str) or not await self._is_ours(prompt_id):
            return
        self._owned.touch(prompt_id)
        with logger.contextualize(task_id=prompt_id):
            await self._apply(prompt_id, event)

    async def _apply(self, task_id: str, event: ListenerEvent) -> None:
        if isinstance(event, ExecutionStart):
            self._running = task_id
            self._speed.started(task_id)
            await self._store.update(task_id, self._here(started))
            logger.info("task running")
        elif isinstance(event, Executing) and event.done:
            self._running = None
            self._finished = (task_id, time.monotonic())
            self._speed.ended(task_id)
            self._progress_written.pop(task_id, None)
            await self._runner.finish(task_id)
        elif isinstance(event, Executing):
            node = event.node
            step = self._here(lambda r: with_progress(r, node, 0, 0))
            await self._store.update(task_id, step, "progress")
        elif isinstance(event, Progress):
            node, value, maximum = event.node, int(event.value), int(event.max)
            self._speed.progressed(task_id, node, value)
            if value < maximum and self._wrote_progress_lately(task_id):
                return
            step = self._here(lambda r: with_progress(r, node, value, maximum))
            await self._store.update(task_id, step, "progress")

    def _wrote_progress_lately(self, task_id: str) -> bool:
        now = time.monotonic()
        if now - self._progress_written.get(task_id, -PROGRESS_WRITE_INTERVAL_S) < (
            PROGRESS_WRITE_INTERVAL_S
        ):
            return True
        self._progress_written[task_id] = now
        return False

    def _here(self, change: TaskChange) -> TaskChange:
        """``change``, applied only while the task is still this node's (a task moved to
        another node keeps its state there)."""
        node_id = self._runner.node_id
        return lambda record: change(record) if record.node_id == node_id else None

    async def _subscribe_to_comfy_logs(self, client_id: str) -> None:
        try:
            await self._comfy.subscribe_logs(client_id, enabled=True)
        except ComfyError as exc:
            logger.warning("could not subscribe to comfyui's log lines", error=str(exc))

    def _relog(self, event: Logs) -> None:
        comfy_log = logger.bind(source="comfyui")
        for entry in event.entries:
            for line in entry.m.splitlines():
                # Progress bars are redrawn per step; the task's progress already says that.
                if line.strip() and not _PROGRESS_BAR.match(line):
                    task_id = self._task_writing(line)
                    (comfy_log.bind(task_id=task_id) if task_id else comfy_log).info(line)

    def _task_writing(self, line: str) -> str | None:
        """The task a ComfyUI line belongs to: the running prompt; while none runs, the one
        that just ended (ComfyUI prints its summary, e.g. "Prompt executed in 0.3 seconds",
        after signalling the end). "got prompt" is printed on submission, for an unknown one."""
        if self._running is not None:
            return self._running
        if self._finished is None or line.startswith("got prompt"):
            return None
        task_id, ended = self._finished
        return task_id if time.monotonic() - ended < _SUMMARY_GRACE_S else None

    async def _is_ours(self, task_id: str) -> bool:
        if self._owned.is_known(task_id):
            return True
        record = await self._store.find(task_id)
        return record is not None and record.node_id == self._runner.node_id
