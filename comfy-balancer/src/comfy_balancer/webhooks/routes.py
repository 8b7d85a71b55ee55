"""``/api/v1/webhooks/dead``: webhooks given up, and putting one back in the outbox.

An admin key sees every tenant's; any other key its own tenant's only (another tenant's dead
letter is "not found")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from comfy_balancer.api.answers import DEAD_LETTER_NOT_FOUND
from comfy_balancer.deps import CallerOf, State
from comfy_balancer.webhooks.outbox import DeadLetter
from comfy_shared.api.openapi import (
    INVALID_REQUEST,
    INVALID_TASK_ID,
    REDIS_UNAVAILABLE,
    error_responses,
)
from comfy_shared.api.task_ids import TaskIdInPath
from comfy_shared.clock import now_ms
from comfy_shared.webhook_outbox import DEAD_MAX

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.get(
    "/dead",
    response_model=list[DeadLetter],
    responses=error_responses(INVALID_REQUEST, REDIS_UNAVAILABLE),
)
async def list_dead_letters(
    state: State,
    caller: CallerOf,
    limit: Annotated[int, Query(ge=1, le=DEAD_MAX)] = 100,
) -> list[DeadLetter]:
    """Webhooks given up (every attempt failed, the receiver answered 410, or the outbox was
    full), newest first, with the last error; the newest 1,000 are kept."""
    tenant = None if caller.sees_every_tenant else caller.tenant
    return await state.outbox.dead_letters(tenant, limit)


@router.post(
    "/dead/{task_id}/retry",
    response_model=DeadLetter,
    responses=error_responses(INVALID_TASK_ID, DEAD_LETTER_NOT_FOUND, REDIS_UNAVAILABLE),
)
async def retry_dead_letter(task_id: TaskIdInPath, state: State, caller: CallerOf) -> DeadLetter:
    """Put a dead letter back in the outbox: it is sent at once, with the same message id,
    and gets the whole schedule of attempts again."""
    tenant = None if caller.sees_every_tenant else caller.tenant
    return await state.outbox.requeue(task_id, tenant, now_ms())
