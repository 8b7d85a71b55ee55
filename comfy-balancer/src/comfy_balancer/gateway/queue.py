"""A user's queue, as ComfyUI shows and changes its own: per user, never fleet-wide.

- ``queue_remaining`` (``GET /prompt``, and every ``status`` frame of the WebSocket relay)
  is the user's unfinished tasks, waiting or running anywhere in the fleet: one read of the
  tenant's unfinished index (``RedisKeys.tenant_unfinished``).
- ``GET /queue``: those tasks as queue items, ``queue_running`` the ones placed on a node
  (dispatched or running), ``queue_pending`` the ones waiting; submission order.
- ``POST /queue``: ``delete`` cancels the named waiting prompts and ``clear`` every waiting
  one; a prompt already placed is not touched (ComfyUI leaves the running one too).
- ``POST /interrupt``: cancels the user's prompt that runs (or is placed on a node), the one
  named by ``prompt_id`` or, without one, each of the user's: never anyone else's.
- ``/api/jobs/.../cancel``: cancels in any state.

Cancelling goes through the balancer's own paths: out of the queue (``TaskQueue.remove``,
then the cancel written), or by the node the task is placed on (``TaskIntake.cancel``).
"""

from __future__ import annotations

from typing import Any, Final

from loguru import logger

from comfy_balancer.gateway.history import queue_item
from comfy_balancer.gateway.identity import GatewayUser
from comfy_balancer.lifespan import BalancerState
from comfy_shared.errors import InvalidTransition
from comfy_shared.lifecycle import Cancelled, Refused
from comfy_shared.models import TaskRecord, is_valid_task_id
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore

JsonObject = dict[str, Any]
PLACED: Final = frozenset({TaskStatus.DISPATCHED, TaskStatus.RUNNING})


async def queue_remaining(store: TaskStore, tenant: str) -> int:
    """The tenant's unfinished tasks (waiting, placed or running), fleet-wide."""
    return await store.count_unfinished(tenant)


async def queue_of(store: TaskStore, tenant: str) -> JsonObject:
    found = await store.find_submissions(await store.unfinished_ids(tenant))
    running, pending = [], []
    for submission in found.values():
        if submission is None or submission.record.tenant != tenant:
            continue
        status = submission.record.status
        if status in PLACED:
            running.append(queue_item(submission))
        elif status is TaskStatus.QUEUED:
            pending.append(queue_item(submission))
    return {"queue_running": running, "queue_pending": pending}


async def own_record(store: TaskStore, tenant: str, task_id: Any) -> TaskRecord | None:
    """The tenant's task of that id (None: no such task, or another tenant's)."""
    if not isinstance(task_id, str) or not is_valid_task_id(task_id):
        return None
    record = await store.find(task_id)
    return record if record is not None and record.tenant == tenant else None


async def cancel_waiting(state: BalancerState, task_id: str) -> bool:
    """Take a waiting task out of the queue and cancel it; False if it was not waiting."""
    if not await state.queue.remove(task_id):
        return False
    try:
        await state.store.apply(task_id, Cancelled())
    except Refused:
        return False
    logger.info("task cancelled", task_id=task_id, source="comfyui-gateway")
    return True


async def cancel(state: BalancerState, user: GatewayUser, task_id: Any) -> bool:
    """Cancel the user's task in whatever state; False if it is not the user's or ended."""
    record = await own_record(state.store, user.tenant, task_id)
    if record is None or record.status.is_terminal:
        return False
    try:
        await state.intake.cancel(record.id, user.caller)
    except InvalidTransition:
        return False  # it ended meanwhile
    return True


async def delete_waiting(state: BalancerState, user: GatewayUser, task_ids: list[Any]) -> None:
    for task_id in task_ids:
        if await own_record(state.store, user.tenant, task_id) is not None:
            await cancel_waiting(state, task_id)


async def clear_waiting(state: BalancerState, user: GatewayUser) -> None:
    statuses = await state.store.statuses(await state.store.unfinished_ids(user.tenant))
    for task_id, status in statuses.items():
        if status is TaskStatus.QUEUED:
            await cancel_waiting(state, task_id)


async def interrupt(state: BalancerState, user: GatewayUser, prompt_id: Any) -> None:
    """Cancel the user's placed prompt ``prompt_id``, or every placed one of the user's when
    it is None; a waiting, ended, unknown or foreign prompt is left alone (as in ComfyUI)."""
    if prompt_id is None:
        statuses = await state.store.statuses(await state.store.unfinished_ids(user.tenant))
        targets = [task_id for task_id, status in statuses.items() if status in PLACED]
    else:
        record = await own_record(state.store, user.tenant, prompt_id)
        targets = [record.id] if record is not None and record.status in PLACED else []
    for task_id in targets:
        await cancel(state, user, task_id)
