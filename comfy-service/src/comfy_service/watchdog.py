"""Fails tasks that hang: never start at the head of ComfyUI's queue, stop making progress,
run past the overall limit, or wait on a ComfyUI that has been unreachable too long (tasks
submitted straight to this node; the balancer takes its own tasks back from such a node).
The decision is pure (:func:`overdue_reason`); the loop acts."""

from __future__ import annotations

from dataclasses import dataclass

from comfy_service.ending import TaskEndings
from comfy_service.prompts import FollowedPrompts
from comfy_service.reachability import Reachability
from comfy_shared.clock import utc_now
from comfy_shared.comfyui import ComfyClient, ComfyUnavailable, QueueState
from comfy_shared.lifecycle import current_attempt
from comfy_shared.models import ErrorType, TaskError, TaskRecord
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore


@dataclass(frozen=True, slots=True)
class Limits:
    start_timeout_s: float
    stall_timeout_s: float
    task_timeout_s: float
    comfyui_down_grace_s: float


@dataclass(frozen=True, slots=True)
class Overdue:
    limit: str
    message: str


def overdue_reason(
    record: TaskRecord,
    *,
    age_s: float,
    idle_s: float,
    at_head_s: float,
    comfyui_down_s: float,
    limits: Limits,
) -> Overdue | None:
    if record.retry is None and comfyui_down_s >= limits.comfyui_down_grace_s:
        return Overdue(
            "comfyui_down_grace_s",
            f"ComfyUI unreachable for {comfyui_down_s:.0f}s "
            f"(limit {limits.comfyui_down_grace_s:g}s)",
        )
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


def is_at_head(queue: QueueState, record: TaskRecord, prompt_id: str) -> bool:
    """Next to run with nothing running, or taken by ComfyUI without a start event yet."""
    if record.status not in (TaskStatus.QUEUED, TaskStatus.DISPATCHED):
        return False
    if queue.is_running(prompt_id):
        return True
    return not queue.running and bool(queue.pending) and queue.pending[0].prompt_id == prompt_id


async def watchdog_once(
    *,
    endings: TaskEndings,
    store: TaskStore,
    prompts: FollowedPrompts,
    comfy: ComfyClient,
    reachability: Reachability,
    limits: Limits,
) -> list[str]:
    """Check every followed prompt once; returns the ids of the tasks that were failed."""
    followed = await prompts.all()
    if not followed:
        return []
    queue = await _queue_or_none(comfy)
    # ComfyUI just answered: the health probe's outage (read every health interval) is over,
    # even if the probe has not seen it yet.
    comfyui_down_s = reachability.down_for_s() if queue is None else 0.0
    records = await store.find_many(sorted({prompt.task_id for prompt in followed}))
    failed = []
    for prompt in followed:
        record = records[prompt.task_id]
        if record is None or current_attempt(record) != prompt.attempt:
            continue  # ended or moved on: reconciliation withdraws the prompt
        at_head = queue is not None and is_at_head(queue, record, prompt.prompt_id)
        reason = overdue_reason(
            record,
            age_s=(utc_now() - (record.submitted_at or record.created_at)).total_seconds(),
            idle_s=prompts.idle_for_s(prompt.prompt_id),
            at_head_s=prompts.at_head(prompt.prompt_id, at_head),
            comfyui_down_s=comfyui_down_s,
            limits=limits,
        )
        if reason is not None:
            error = TaskError(
                type=ErrorType.SERVICE, message=reason.message, details={"limit": reason.limit}
            )
            if await endings.fail(prompt, error) is not None:
                failed.append(prompt.task_id)
    return failed


async def _queue_or_none(comfy: ComfyClient) -> QueueState | None:
    try:
        return await comfy.get_queue()
    except ComfyUnavailable:
        return None  # only the overall limit can be judged without the queue
