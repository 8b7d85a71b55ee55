"""Bring the followed prompts in line with what ComfyUI says, after anything that may have
hidden events from us: a WebSocket reconnect, a service restart, an event that could not be
recorded (Redis did not answer: reconciled again every second until it does), or just time
(a safety net).

The reads are ordered so that no prompt can slip through: followed prompts first, then the
queue, then history for whatever is not queued. ComfyUI moves a prompt from its queue to its
history under one lock, so a prompt is always in one of the two; one in neither is lost.

A prompt whose attempt is over (the task ended, or moved to another node while this one was
cut off) is withdrawn first, so once this service reaches its ComfyUI again no such prompt
starts: queued ones are dequeued, then a running one is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Final

from loguru import logger

from comfy_service.ending import TaskEndings
from comfy_service.prompts import FollowedPrompts, Prompt
from comfy_shared.comfyui import ComfyClient, QueueState
from comfy_shared.lifecycle import Refused, Started
from comfy_shared.loops import LoopHandle
from comfy_shared.models import ErrorType, TaskError, TaskRecord
from comfy_shared.task_store import TaskStore

CATCH_UP_RETRY_S: Final = 1.0
"""After events were missed, a reconciliation that fails is tried again this soon."""
LOST_MESSAGE = (
    "ComfyUI no longer knows this task: it is neither queued nor in its history "
    "(ComfyUI probably restarted)"
)


@dataclass
class ReconcileReport:
    finished: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    still_queued: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)


class Reconciler:
    """Reconciles every ``interval_s``, and as soon as it can after events were missed."""

    def __init__(
        self,
        *,
        endings: TaskEndings,
        store: TaskStore,
        prompts: FollowedPrompts,
        comfy: ComfyClient,
        interval_s: float,
    ) -> None:
        self._endings = endings
        self._store = store
        self._prompts = prompts
        self._comfy = comfy
        self._interval_s = interval_s
        self._due = asyncio.Event()

    def missed_events(self) -> None:
        """Events of ComfyUI could not be recorded: the next pass comes now, and passes are
        tried every :data:`CATCH_UP_RETRY_S` until one succeeds (Redis is back)."""
        self._due.set()

    async def reconcile(self) -> ReconcileReport:
        try:
            return await reconcile_once(
                endings=self._endings, store=self._store, prompts=self._prompts, comfy=self._comfy
            )
        except Exception:
            self._due.set()  # what this pass was to read is still unread
            raise

    async def run(self, handle: LoopHandle) -> None:
        """The loop: a pass every ``interval_s``, or sooner when one is due."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._due.wait()
            self._due.clear()
            try:
                await self.reconcile()
            except Exception as exc:
                handle.failing(exc)
                await asyncio.sleep(CATCH_UP_RETRY_S)
            else:
                handle.working()


async def reconcile_once(
    *, endings: TaskEndings, store: TaskStore, prompts: FollowedPrompts, comfy: ComfyClient
) -> ReconcileReport:
    report = ReconcileReport()
    followed = await prompts.all()
    if not followed:
        return report
    queue = await comfy.get_queue()
    records = await store.find_many(sorted({prompt.task_id for prompt in followed}))
    # The running prompt last: withdrawn first, it would make room for a waiting one that is
    # to be withdrawn too, and that one would start before its own withdrawal reached ComfyUI.
    for prompt in sorted(followed, key=lambda prompt: queue.is_running(prompt.prompt_id)):
        with logger.contextualize(task_id=prompt.task_id, attempt=prompt.attempt.number):
            record = records[prompt.task_id]
            await _reconcile_prompt(prompt, record, queue, endings, store, comfy, report)
    if report.finished or report.lost or report.withdrawn:
        logger.info(
            "reconciled with comfyui",
            finished=len(report.finished),
            lost=len(report.lost),
            withdrawn=len(report.withdrawn),
        )
    return report


async def _reconcile_prompt(
    prompt: Prompt,
    record: TaskRecord | None,
    queue: QueueState,
    endings: TaskEndings,
    store: TaskStore,
    comfy: ComfyClient,
    report: ReconcileReport,
) -> None:
    in_comfy = queue.position(prompt.prompt_id) is not None
    if (over := _why_over(prompt, record)) is not None:
        if in_comfy:
            await endings.withdraw(prompt, over, record)
            report.withdrawn.append(prompt.task_id)
        else:
            await endings.forget(prompt)
    elif queue.is_running(prompt.prompt_id):
        with contextlib.suppress(Refused):  # the start may have been missed, or seen already
            await store.apply(prompt.task_id, Started(prompt.attempt))
        report.running.append(prompt.task_id)
    elif in_comfy:
        report.still_queued.append(prompt.task_id)
    elif entry := await comfy.get_history(prompt.prompt_id):
        await endings.finish(prompt, entry)
        report.finished.append(prompt.task_id)
    else:
        lost = TaskError(type=ErrorType.SERVICE, message=LOST_MESSAGE, details={"node_fault": True})
        await endings.fail(prompt, lost)
        report.lost.append(prompt.task_id)


def _why_over(prompt: Prompt, record: TaskRecord | None) -> str | None:
    """Why the prompt's attempt is over, or None while it is the task's current one."""
    if record is None:
        return "the task expired"
    if record.status.is_terminal:
        return f"the task {record.status.value}"
    if record.node_id != prompt.attempt.node_id or record.attempts != prompt.attempt.number:
        return f"the task moved on to attempt {record.attempts} on {record.node_id or 'the queue'}"
    return None
