from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from comfy_service.deps import State
from comfy_shared.api.request_body import generate_request_body, generate_request_from_json
from comfy_shared.api.schemas import ErrorBody, TaskView

router = APIRouter(tags=["tasks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit."},
    422: {
        "model": ErrorBody,
        "description": "Invalid request (`invalid_request`; a number JSON cannot hold, "
        "`invalid_number`, with its `path`), or ComfyUI rejected the graph "
        "(`error` and `node_errors` as ComfyUI sent them).",
    },
    503: {
        "model": ErrorBody,
        "description": "ComfyUI or Redis unreachable, or the node is at --max-concurrent-submits "
        "(`overloaded`, with Retry-After); nothing was queued.",
    },
}


@router.post(
    "/generate",
    status_code=202,
    response_model=TaskView,
    responses=_ERRORS
    | {200: {"model": TaskView, "description": "Idempotency-Key or task id known: no re-run."}},
    openapi_extra={"requestBody": generate_request_body()},
)
async def generate(
    http: Request,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskView:
    """Queue a graph, or a workflow template with parameters, on this node's ComfyUI. The same
    ``Idempotency-Key`` (or task id) again returns the same task (200), never a second run."""
    request = generate_request_from_json(await http.body())
    with state.submits.enter():
        submission = await state.submitter.submit(request, idempotency_key)
    if not submission.created:
        response.status_code = 200
    view = TaskView.from_record(submission.task)
    response.headers["Location"] = view.links.self
    return view
