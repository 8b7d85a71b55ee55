from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from comfy_balancer.deps import State
from comfy_shared.api.schemas import ErrorBody, GenerateRequest, TaskView

router = APIRouter(tags=["tasks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"model": TaskView, "description": "Idempotency-Key or task id already used: no rerun."},
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit."},
    422: {
        "model": ErrorBody,
        "description": "Invalid request, or no live node could run the graph "
        "(`missing` says what each checked node lacks).",
    },
    429: {"model": ErrorBody, "description": "Queue full; see Retry-After."},
}


@router.post("/generate", status_code=202, response_model=TaskView, responses=_ERRORS)
async def generate(
    request: GenerateRequest,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskView:
    """Queue a graph for the cluster; the answer carries its position in the queue."""
    intake = await state.intake.accept(request, idempotency_key)
    if not intake.created:
        response.status_code = 200
    position = await state.queue.position(intake.task.id)
    view = TaskView.from_record(intake.task, queue_position=position)
    response.headers["Location"] = view.links.self
    return view
