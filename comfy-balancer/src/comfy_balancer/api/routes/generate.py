from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from comfy_balancer.api.answers import (
    BAND_NOT_ALLOWED,
    BUDGET_EXHAUSTED,
    INVALID_WEBHOOK_URL,
    KEY_QUEUE_FULL,
    NO_CAPABLE_NODE,
    NOT_REPLICATED,
    PRIORITY_NOT_ALLOWED,
    PROMPT_REJECTED,
    QUEUE_FULL,
    RATE_LIMITED,
    TASK_ID_TAKEN,
    WEBHOOK_UNSIGNED,
)
from comfy_balancer.deps import CallerOf, State
from comfy_shared.api.openapi import (
    BUSY,
    FORM_ANSWERS,
    GENERATE_BODY_ANSWERS,
    REDIS_UNAVAILABLE,
    STORE_UNAVAILABLE,
    error_responses,
)
from comfy_shared.api.request_body import JsonOrFormGenerateRequest, generate_request_body
from comfy_shared.api.schemas import TaskView

router = APIRouter(tags=["tasks"])

_ANSWERS = error_responses(
    *GENERATE_BODY_ANSWERS,
    *FORM_ANSWERS,
    PROMPT_REJECTED,
    NO_CAPABLE_NODE,
    INVALID_WEBHOOK_URL,
    WEBHOOK_UNSIGNED,
    PRIORITY_NOT_ALLOWED,
    BAND_NOT_ALLOWED,
    TASK_ID_TAKEN,
    QUEUE_FULL,
    KEY_QUEUE_FULL,
    RATE_LIMITED,
    BUDGET_EXHAUSTED,
    BUSY,
    REDIS_UNAVAILABLE,
    NOT_REPLICATED,
    STORE_UNAVAILABLE,
) | {200: {"model": TaskView, "description": "Idempotency-Key or task id already used: no rerun."}}


@router.post(
    "/generate",
    status_code=202,
    response_model=TaskView,
    responses=_ANSWERS,
    openapi_extra={"requestBody": generate_request_body(forms=True)},
)
async def generate(
    request: JsonOrFormGenerateRequest,
    state: State,
    caller: CallerOf,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskView:
    """Queue a graph, or a workflow template with parameters, for the cluster; the answer
    carries the task's position in the queue. The body is JSON (``application/json``, UTF-8);
    images can come as base64 in ``params`` or, with ``multipart/form-data``, as file parts
    named after their parameter. A ``webhook_url`` (or the API key's) is told when the task
    ends."""
    await state.webhooks.check_submit(request.webhook_url, caller)
    intake = await state.intake.accept(request, idempotency_key, caller)
    if intake.quota is not None:
        response.headers.update(intake.quota.headers())
    if not intake.created:
        response.status_code = 200
    position = intake.position
    if not intake.created:
        position = await state.queue.position(intake.task.id)
    eta = await state.pace.expected_times(intake.task, position)
    view = TaskView.from_record(intake.task, queue_position=position, eta=eta)
    response.headers["Location"] = view.links.self
    return view
