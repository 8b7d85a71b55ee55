from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from starlette.datastructures import UploadFile

from comfy_balancer.deps import CallerOf, State
from comfy_shared.api.request_body import (
    generate_request_body,
    generate_request_from_document,
    generate_request_from_json,
)
from comfy_shared.api.schemas import ErrorBody, GenerateRequest, TaskView
from comfy_shared.api.strict_json import parse_strict_json

router = APIRouter(tags=["tasks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"model": TaskView, "description": "Idempotency-Key or task id already used: no rerun."},
    400: {"model": ErrorBody, "description": "Malformed JSON."},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit."},
    422: {
        "model": ErrorBody,
        "description": "Invalid request or parameters (a number JSON cannot hold: "
        "`invalid_number`, with its `path`), or no live node could run the graph "
        "(`missing` says what each checked node lacks).",
    },
    429: {"model": ErrorBody, "description": "Queue full; see Retry-After."},
}

_BODY = generate_request_body(
    {
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
    }
)


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
    caller: CallerOf,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskView:
    """Queue a graph, or a workflow template with parameters, for the cluster; the answer
    carries the task's position in the queue. Images can come as base64 in ``params`` or, with
    ``multipart/form-data``, as file parts named after their parameter."""
    intake = await state.intake.accept(await _read_request(http), idempotency_key, caller)
    if intake.quota is not None:
        response.headers.update(intake.quota.headers())
    if not intake.created:
        response.status_code = 200
    position = intake.position
    if not intake.created:
        position = await state.queue.position(intake.task.id)
    view = TaskView.from_record(intake.task, queue_position=position)
    response.headers["Location"] = view.links.self
    return view


async def _read_request(http: Request) -> GenerateRequest:
    if http.headers.get("content-type", "").startswith("multipart/form-data"):
        return generate_request_from_document(await _multipart_body(http))
    return generate_request_from_json(await http.body())


async def _multipart_body(http: Request) -> Any:
    """The ``request`` field's JSON, with each file part as a base64 parameter."""
    form = await http.form()
    raw = form.get("request")
    body = parse_strict_json(raw) if isinstance(raw, str) else {}
    if not isinstance(body, dict):
        return body  # the schema refuses it, naming what it is
    params = body.setdefault("params", {})
    if not isinstance(params, dict):
        return body
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            params[name] = base64.b64encode(await value.read()).decode()
    return body
