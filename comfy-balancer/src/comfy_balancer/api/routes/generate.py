from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from comfy_balancer.deps import State
from comfy_shared.api.schemas import ErrorBody, GenerateRequest, TaskView

router = APIRouter(tags=["tasks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"model": TaskView, "description": "Idempotency-Key or task id already used: no rerun."},
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit."},
    422: {
        "model": ErrorBody,
        "description": "Invalid request or parameters, or no live node could run the graph "
        "(`missing` says what each checked node lacks).",
    },
    429: {"model": ErrorBody, "description": "Queue full; see Retry-After."},
}

_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": GenerateRequest.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "request": {
                        "type": "string",
                        "description": "The JSON body as above, without the images.",
                    }
                },
                "additionalProperties": {"type": "string", "format": "binary"},
                "description": "Each file part fills the image parameter of its field name.",
            }
        },
    },
}


@router.post(
    "/generate",
    status_code=202,
    response_model=TaskView,
    responses=_ERRORS,
    openapi_extra={"requestBody": _BODY},
)
async def generate(
    http: Request,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskView:
    """Queue a graph, or a workflow template with parameters, for the cluster; the answer
    carries the task's position in the queue. Images can come as base64 in ``params`` or, with
    ``multipart/form-data``, as file parts named after their parameter."""
    intake = await state.intake.accept(await _read_request(http), idempotency_key)
    if not intake.created:
        response.status_code = 200
    position = intake.position
    if not intake.created:
        position = await state.queue.position(intake.task.id)
    view = TaskView.from_record(intake.task, queue_position=position)
    response.headers["Location"] = view.links.self
    return view


async def _read_request(http: Request) -> GenerateRequest:
    try:
        if http.headers.get("content-type", "").startswith("multipart/form-data"):
            return GenerateRequest.model_validate(await _multipart_body(http))
        return GenerateRequest.model_validate_json(await http.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    except json.JSONDecodeError as exc:
        problem = {"loc": ("body", "request"), "msg": str(exc), "type": "json_invalid"}
        raise RequestValidationError([problem]) from exc


async def _multipart_body(http: Request) -> dict[str, Any]:
    form = await http.form()
    raw = form.get("request")
    body: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else {}
    params = body.setdefault("params", {})
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            params[name] = base64.b64encode(await value.read()).decode()
    return body
