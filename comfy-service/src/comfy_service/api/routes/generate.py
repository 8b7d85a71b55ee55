from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from comfy_service.api.answers import (
    COMFYUI_ANSWERS,
    NODE_NOT_READY,
    OVERLOADED,
    PROMPT_REJECTED,
    WEBHOOKS_NOT_SENT,
)
from comfy_service.deps import State
from comfy_service.errors import NodeNotReady, WebhooksNotSent
from comfy_shared.api.openapi import (
    BUSY,
    GENERATE_BODY_ANSWERS,
    REDIS_UNAVAILABLE,
    STORE_UNAVAILABLE,
    error_responses,
)
from comfy_shared.api.request_body import JsonGenerateRequest, generate_request_body
from comfy_shared.api.schemas import TaskView

router = APIRouter(tags=["tasks"])

_ANSWERS = error_responses(
    *GENERATE_BODY_ANSWERS,
    PROMPT_REJECTED,
    WEBHOOKS_NOT_SENT,
    *COMFYUI_ANSWERS,
    OVERLOADED,
    NODE_NOT_READY,
    BUSY,
    REDIS_UNAVAILABLE,
    STORE_UNAVAILABLE,
)


@router.post(
    "/generate",
    status_code=202,
    response_model=TaskView,
    responses=_ANSWERS
    | {200: {"model": TaskView, "description": "Idempotency-Key or task id known: no re-run."}},
    openapi_extra={"requestBody": generate_request_body()},
)
async def generate(
    request: JsonGenerateRequest,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskView:
    """Queue a graph, or a workflow template with parameters, on this node's ComfyUI. The body
    is JSON (``application/json``, UTF-8). The same ``Idempotency-Key`` (or task id) again
    returns the same task (200), never a second run."""
    if request.webhook_url is not None:
        raise WebhooksNotSent
    if not state.lifecycle.accepting:
        raise NodeNotReady(state.lifecycle.current())
    with state.submits.enter():
        submission = await state.submitter.submit(request, idempotency_key)
    if not submission.created:
        response.status_code = 200
    view = TaskView.from_record(submission.task)
    response.headers["Location"] = view.links.self
    return view
