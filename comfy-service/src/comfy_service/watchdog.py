"""Fails tasks that hang: never start at the head of ComfyUI's queue, stop making progress,
or run past the overall limit. The decision is pure (:func:`overdue_reason`); the loop acts."""

from __future__ import annotations

from dataclasses import dataclass

from comfy_service.owned_tasks import OwnedTasks
from comfy_service.runner import TaskRunner
from comfy_shared.clock import utc_now
from comfy_shared.comfyui import ComfyClient, ComfyUnavailable, QueueState
from comfy_shared.models import ErrorType, TaskError, TaskRecord
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore


@dataclass(frozen=True, slots=True)
class Limits:
    start_timeout_s: float
    stall_timeout_s: float
    task_timeout_s: float


@dataclass(frozen=True, slots=True)
class Overdue:
    limit: str
    message: str


def overdue_reason(
    record: TaskRecord, *, age_s: float, idle_s: float, at_head_s: float, limits: Limits
) -> Overdue | None:
    if age_s > limits.task_timeout_s:
        return Overdue(
            "task_timeout_s",
            f"the task did not finish within its time limit of {limits.task_timeout_s:g}s",
        )
    if record.status is TaskStatus.RUNNING and idle_s > limits.stall_timeout_s:
        return Overdue(
            "stall_timeout_s",
            f"the task made no progress for {idle_s:.0f}s "
            f"(limit {limits.stall_timeout_s:g}s without a node change or step)",
        )
    if at_head_s > limits.start_timeout_s:
        return Overdue(
            "start_timeout_s",
            f"the task did not start within {limits.start_timeout_s:g}s "
            "of reaching the head of ComfyUI's queue",
        )
    return None


def is_at_head(queue: QueueState, record: TaskRecord) -> bool:
    """Next to run with nothing running, or taken by ComfyUI without a start event yet."""
    if record.status not in (TaskStatus.QUEUED, TaskStatus.DISPATCHED):
        return False
    if queue.is_running(record.id):
        return True
    return not queue.running and bool(queue.pending) and queue.pending[0].prompt_id == record.id


async def watchdog_once(
    *, runner: TaskRunner, store: TaskStore, owned: OwnedTasks, comfy: ComfyClient, limits: Limits
) -> list[str]:
    """Check every owned task once; returns the ids that were failed."""
    task_ids = await owned.ids()
    if not task_ids:
        return []
    queue = await _queue_or_none(comfy)
    failed = []
    for task_id in sorted(task_ids):
        record = await store.find(task_id)
        if record is None or record.status.is_terminal:
            continue
        at_head = queue is not None and is_at_head(queue, record)
        reason = overdue_reason(
            record,
            age_s=(utc_now() - (record.submitted_at or record.created_at)).total_seconds(),
            idle_s=owned.idle_for_s(task_id),
            at_head_s=owned.at_head(task_id, at_head),
            limits=limits,
        )
        if reason is not None:
            error = TaskError(
                type=ErrorType.SERVICE, message=reason.message, details={"limit": reason.limit}
            )
            if await runner.fail(task_id, error) is not None:
                failed.append(task_id)
    return failed


async def _queue_or_none(comfy: ComfyClient) -> QueueState | None:
    try:
        return await comfy.get_queue()
    except ComfyUnavailable:
        return None  # only the overall limit can be judged without the queue
