"""One error body for every failure, and the handlers that produce it.

Each app passes one table that maps its domain exceptions to (status, code, fault type);
a test checks that every exception the app can raise is in its table. The refusals of a
request's shape that both apps share are in ``REQUEST_ERRORS``, which each table includes
(and ``FORM_ERRORS``, in the table of an app that reads multipart bodies).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from comfy_shared.api.request_body import InvalidForm, MalformedForm, UnsupportedMediaType
from comfy_shared.api.request_limits import GraphTooLarge, StringTooLong
from comfy_shared.api.schemas import ErrorBody
from comfy_shared.api.strict_json import (
    InvalidJsonValue,
    InvalidNumber,
    InvalidString,
    MalformedJson,
    NestedTooDeep,
)
from comfy_shared.api.task_ids import InvalidTaskId
from comfy_shared.api.workflows import WorkflowNotFound
from comfy_shared.comfyui.errors import PromptRejected
from comfy_shared.errors import InvalidTransition
from comfy_shared.models import ErrorType
from comfy_shared.outputs.serving import (
    OutputExpired,
    OutputNotFound,
    RangeNotSatisfiable,
    content_range_header,
)
from comfy_shared.outputs.store import StoreUnavailable

STORE_RETRY_AFTER_S = 5


def _no_extras(_: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    status: int
    code: str
    type: ErrorType
    extras: Callable[[Any], dict[str, Any]] = field(default=_no_extras)
    headers: Callable[[Any], dict[str, str]] | None = None


ErrorTable = Mapping[type[Exception], ErrorMapping]


def retry_after_header(exc: Any) -> dict[str, str]:
    """For errors that say when to come back (a ``retry_after_s`` attribute)."""
    return {"Retry-After": str(exc.retry_after_s)}


def transition_extras(exc: InvalidTransition) -> dict[str, Any]:
    """What an ended task's 409 adds: the state it ended in."""
    return {"status": exc.current.value}


def _json_path_extras(exc: InvalidJsonValue) -> dict[str, Any]:
    return {"path": exc.path}


def _prompt_rejected_extras(exc: PromptRejected) -> dict[str, Any]:
    return {"error": exc.error, "node_errors": exc.node_errors}


_V = ErrorType.VALIDATION

PROMPT_REJECTED = ErrorMapping(422, "prompt_rejected", _V, _prompt_rejected_extras)
"""A graph ComfyUI refuses, with its ``error`` and ``node_errors`` as ComfyUI words them: a
service passes on its ComfyUI's refusal, the balancer answers alike for its fleet's."""

REQUEST_ERRORS: ErrorTable = {
    MalformedJson: ErrorMapping(400, "malformed_json", _V),
    WorkflowNotFound: ErrorMapping(404, "workflow_not_found", _V),
    UnsupportedMediaType: ErrorMapping(415, "unsupported_media_type", _V),
    InvalidNumber: ErrorMapping(422, "invalid_number", _V, _json_path_extras),
    InvalidString: ErrorMapping(422, "invalid_string", _V, _json_path_extras),
    NestedTooDeep: ErrorMapping(422, "nested_too_deep", _V, _json_path_extras),
    StringTooLong: ErrorMapping(422, "string_too_long", _V, _json_path_extras),
    GraphTooLarge: ErrorMapping(422, "graph_too_large", _V),
    InvalidTaskId: ErrorMapping(422, "invalid_task_id", _V),
}
"""Refusals of a request's body, path or media type, before it reaches any domain code."""

FORM_ERRORS: ErrorTable = {
    MalformedForm: ErrorMapping(400, "malformed_form", _V),
    InvalidForm: ErrorMapping(422, "invalid_form", _V),
}
"""Refusals of a ``multipart/form-data`` body, for an app that reads such bodies."""

OUTPUT_ERRORS: ErrorTable = {
    OutputNotFound: ErrorMapping(404, "output_not_found", _V),
    OutputExpired: ErrorMapping(410, "output_expired", _V),
    RangeNotSatisfiable: ErrorMapping(
        416, "range_not_satisfiable", _V, headers=content_range_header
    ),
    StoreUnavailable: ErrorMapping(
        503,
        "store_unavailable",
        ErrorType.SERVICE,
        headers=lambda _: {"Retry-After": str(STORE_RETRY_AFTER_S)},
    ),
}
"""Answers about the output store, for an app that keeps files in it (outputs, and the
input files of the tasks it accepts)."""

HTTP_CODES = {
    # FastAPI's own body parser (the admin routes with a model body) refuses a body that is
    # not UTF-8 text with a bare 400: the same fault as JSON that does not parse.
    400: "malformed_json",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "body_too_large",
}
"""Codes of the answers Starlette and the body middleware give as HTTPException."""


def answer_codes(table: ErrorTable) -> dict[str, int]:
    """Every code an app with ``table`` answers, with its status: the table's, and those of
    the handlers below (a refused parameter, a Starlette HTTPException, an unexpected
    error)."""
    return {
        **{mapping.code: mapping.status for mapping in table.values()},
        "invalid_request": 422,
        "malformed_json": 400,
        **{code: status for status, code in HTTP_CODES.items()},
        "internal_error": 500,
    }


def error_response(
    status: int,
    code: str,
    detail: str,
    fault: ErrorType,
    headers: Mapping[str, str] | None = None,
    /,
    **extras: Any,  # positional-only above: extras may well be called "status" or "code"
) -> JSONResponse:
    body = ErrorBody(detail=detail, code=code, type=fault, **extras)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, table: ErrorTable) -> None:
    for exc_class, mapping in table.items():
        app.add_exception_handler(exc_class, _domain_handler(mapping))
    app.add_exception_handler(RequestValidationError, _request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


def _domain_handler(mapping: ErrorMapping) -> Callable[[Request, Exception], Any]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        headers = mapping.headers(exc) if mapping.headers else None
        return error_response(
            mapping.status, mapping.code, str(exc), mapping.type, headers, **mapping.extras(exc)
        )

    return handle


async def _request_validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    if any(error["type"] == "json_invalid" for error in errors):
        return error_response(
            400, "malformed_json", "the body is not valid JSON", ErrorType.VALIDATION, errors=errors
        )
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return error_response(422, "invalid_request", summary, ErrorType.VALIDATION, errors=errors)


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    fault = ErrorType.VALIDATION if exc.status_code < 500 else ErrorType.SERVICE
    code = HTTP_CODES.get(exc.status_code, "http_error")
    headers = exc.headers
    if exc.status_code == 405:
        headers = {"Allow": ", ".join(allowed_methods(request))}
    return error_response(exc.status_code, code, str(exc.detail), fault, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path. Starlette's own 405 names only
    the first route whose path matched: ``GET`` alone where ``DELETE`` is served too."""
    path: str = request.scope["path"]
    root_path: str = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):  # behind a proxy that strips a prefix
        path = path[len(root_path) :] or "/"
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.path and route.methods and compile_path(route.path)[0].match(path):
            methods |= route.methods
    return sorted(methods)


async def _unexpected_handler(_: Request, exc: Exception) -> JSONResponse:
    logger.opt(exception=exc).error("unhandled error while serving a request")
    return error_response(500, "internal_error", "internal error", ErrorType.SERVICE)
