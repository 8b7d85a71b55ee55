"""One error body for every failure, and the handlers that produce it.

Each app passes one table that maps its domain exceptions to (status, code, fault type);
a test checks that every exception the app can raise is in its table. The refusals of a
request's shape that both apps share are in ``REQUEST_ERRORS``, which each table includes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfy_shared.api.schemas import ErrorBody
from comfy_shared.api.strict_json import (
    InvalidJsonValue,
    InvalidNumber,
    InvalidString,
    MalformedJson,
    NestedTooDeep,
)
from comfy_shared.api.task_ids import InvalidTaskId
from comfy_shared.errors import InvalidTransition
from comfy_shared.models import ErrorType


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


REQUEST_ERRORS: ErrorTable = {
    MalformedJson: ErrorMapping(400, "malformed_json", ErrorType.VALIDATION),
    InvalidNumber: ErrorMapping(422, "invalid_number", ErrorType.VALIDATION, _json_path_extras),
    InvalidString: ErrorMapping(422, "invalid_string", ErrorType.VALIDATION, _json_path_extras),
    NestedTooDeep: ErrorMapping(422, "nested_too_deep", ErrorType.VALIDATION, _json_path_extras),
    InvalidTaskId: ErrorMapping(422, "invalid_task_id", ErrorType.VALIDATION),
}
"""Refusals of a request's body or path, before it reaches any domain code."""

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


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


async def _http_exception_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    fault = ErrorType.VALIDATION if exc.status_code < 500 else ErrorType.SERVICE
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), fault, exc.headers)


async def _unexpected_handler(_: Request, exc: Exception) -> JSONResponse:
    logger.opt(exception=exc).error("unhandled error while serving a request")
    return error_response(500, "internal_error", "internal error", ErrorType.SERVICE)
