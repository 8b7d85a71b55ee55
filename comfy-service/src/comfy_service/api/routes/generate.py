from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from comfy_service.deps import State
from comfy_shared.api.schemas import ErrorBody, GenerateRequest, TaskView

router = APIRouter(tags=["tasks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit."},
    422: {
        "model": ErrorBody,
        "description": "Invalid request, or ComfyUI rejected the graph "
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
    responses=_ERRORS | {200: {"model": TaskView, "description": "The id was known: no re-run."}},
)
async def generate(request: GenerateRequest, state: State, response: Response) -> TaskView:
    """Queue a graph on this node's ComfyUI. The task id is ComfyUI's prompt id."""
    with state.submits.enter():
        submission = await state.submitter.submit(request)
    if not submission.created:
        response.status_code = 200
    view = TaskView.from_record(submission.task)
    response.headers["Location"] = view.links.self
    return view
