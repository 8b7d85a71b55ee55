"""Bring the owned tasks in line with what ComfyUI says, after anything that may have hidden
events from us: a WebSocket reconnect, a service restart, or just time (a safety net).

The reads are ordered so that no task can slip through: owned ids first, then the queue, then
history for whatever is not queued. ComfyUI moves a prompt from its queue to its history
under one lock, so a prompt is always in one of the two; one in neither is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loguru import logger

from comfy_service.owned_tasks import OwnedTasks
from comfy_service.record_changes import started
from comfy_service.runner import TaskRunner
from comfy_shared.comfyui import ComfyClient, QueueState
from comfy_shared.models import ErrorType, TaskError
from comfy_shared.task_store import TaskStore

LOST_MESSAGE = (
    "ComfyUI no longer knows this task: it is neither queued nor in its history "
    "(ComfyUI probably restarted)"
)


@dataclass
class ReconcileReport:
    finished: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    still_queued: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)


async def reconcile_once(
    *, runner: TaskRunner, store: TaskStore, owned: OwnedTasks, comfy: ComfyClient
) -> ReconcileReport:
    report = ReconcileReport()
    task_ids = await owned.ids()
    if not task_ids:
        return report
    queue = await comfy.get_queue()
    for task_id in sorted(task_ids):
        with logger.contextualize(task_id=task_id):
            await _reconcile_task(task_id, queue, runner, store, owned, comfy, report)
    if report.finished or report.lost:
        logger.info("reconciled with comfyui", finished=len(report.finished), lost=len(report.lost))
    return report


async def _reconcile_task(
    task_id: str,
    queue: QueueState,
    runner: TaskRunner,
    store: TaskStore,
    owned: OwnedTasks,
    comfy: ComfyClient,
    report: ReconcileReport,
) -> None:
    record = await store.find(task_id)
    if record is None or record.status.is_terminal:
        await owned.remove(task_id)
    elif record.node_id != runner.node_id:
        # Another node runs it now (this one was taken for dead): drop our copy of the prompt.
        await runner.abandon(task_id)
    elif queue.is_running(task_id):
        await store.update(task_id, started)  # the start event may have been missed
        report.running.append(task_id)
    elif queue.is_pending(task_id):
        report.still_queued.append(task_id)
    elif entry := await comfy.get_history(task_id):
        await runner.finish(task_id, entry)
        report.finished.append(task_id)
    else:
        lost = TaskError(type=ErrorType.SERVICE, message=LOST_MESSAGE, details={"node_fault": True})
        await runner.fail(task_id, lost)
        report.lost.append(task_id)
