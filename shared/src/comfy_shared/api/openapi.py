"""What the OpenAPI document says about errors: every error answer of every route, with the
codes it can carry, all in the one ``ErrorBody`` shape the handlers produce.

A route lists its answers (``responses=error_responses(TASK_NOT_FOUND, REDIS_UNAVAILABLE)``);
each status is documented as ``ErrorBody`` whose ``code`` is one of the codes listed for it,
so a client (or a schema checker) learns exactly which codes to expect. ``complete_openapi``
adds what every route can answer (500 ``internal_error``), the ``ErrorBody`` schema itself,
and removes FastAPI's own 422 (``HTTPValidationError``, a list of problems), which no route
of ours ever sends: a refused parameter is a 422 ``invalid_request`` ``ErrorBody``.

The answers both apps share are defined here; each app defines its own beside its routes. A
test per app checks that every documented (status, code) is one its error table produces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from comfy_shared.api.schemas import API_PREFIX, ErrorBody

_COMPONENTS = "#/components/schemas/"
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


@dataclass(frozen=True, slots=True)
class Answer:
    """One error answer: its status, its stable ``code`` and when it is given."""

    status: int
    code: str
    meaning: str


Responses = dict[int | str, dict[str, Any]]


def error_responses(*answers: Answer) -> Responses:
    """The OpenAPI ``responses`` of a route's error answers, grouped by status."""
    by_status: dict[int, list[Answer]] = {}
    for answer in answers:
        by_status.setdefault(answer.status, []).append(answer)
    return {status: _response(group) for status, group in sorted(by_status.items())}


def _response(answers: list[Answer]) -> dict[str, Any]:
    codes = list(dict.fromkeys(answer.code for answer in answers))
    schema = {
        "allOf": [
            {"$ref": f"{_COMPONENTS}ErrorBody"},
            {"properties": {"code": {"type": "string", "enum": codes}}},
        ]
    }
    description = "\n".join(f"- `{answer.code}`: {answer.meaning}" for answer in answers)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OpenApiRewrite = Callable[[dict[str, Any]], None]


def complete_openapi(
    app: FastAPI,
    models: Sequence[type[BaseModel]] = (),
    rewrites: Sequence[OpenApiRewrite] = (),
) -> None:
    """Make ``app.openapi()`` document errors as they are answered (see the module doc),
    with ``models`` (those routes refer to by hand, e.g. a body they read themselves) in the
    components under their names, then apply ``rewrites`` to the document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _add_models(schema, (ErrorBody, *models))
            _rewrite_errors(schema)
            for rewrite in rewrites:
                rewrite(schema)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _add_models(schema: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        model_schema = model.model_json_schema(ref_template=_COMPONENTS + "{model}")
        schemas.update(model_schema.pop("$defs", {}))
        schemas[model.__name__] = model_schema


def _rewrite_errors(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    for operation in _operations(schema):
        responses = operation["responses"]
        if _is_fastapi_validation_error(responses.get("422")):
            del responses["422"]
        responses.update(
            {str(status): response for status, response in error_responses(INTERNAL_ERROR).items()}
        )


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [operation for item in schema.get("paths", {}).values() for operation in item.values()]


def _is_fastapi_validation_error(response: dict[str, Any] | None) -> bool:
    if response is None:
        return False
    media = response.get("content", {}).get("application/json", {})
    return bool(media.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"))


_TASK_LINKS = {
    "GetTask": ("get", "/tasks/{task_id}"),
    "CancelTask": ("delete", "/tasks/{task_id}"),
    "GetTaskLog": ("get", "/tasks/{task_id}/logs"),
}


def link_new_tasks(schema: dict[str, Any]) -> None:
    """OpenAPI links from each answer that carries a task (``POST /generate``'s 200 and 202)
    to the routes that take its id, so tools can follow a task the way a client does."""
    paths: dict[str, dict[str, Any]] = schema["paths"]
    links = {
        name: {
            "operationId": operation["operationId"],
            "parameters": {"task_id": "$response.body#/id"},
        }
        for name, (method, suffix) in _TASK_LINKS.items()
        for path, item in paths.items()
        if path.endswith(suffix) and (operation := item.get(method)) is not None
    }
    for path, item in paths.items():
        if path.endswith("/generate") and "post" in item:
            for status, response in item["post"]["responses"].items():
                if status in ("200", "202"):
                    response["links"] = links


def require_credentials(answers: Sequence[Answer], schemes: dict[str, Any]) -> OpenApiRewrite:
    """A rewrite: every ``/api/v1`` operation needs one of the security ``schemes`` (name ->
    OpenAPI security scheme) and may give ``answers`` (401, 403...) when it is missing."""

    def rewrite(schema: dict[str, Any]) -> None:
        schema["components"]["securitySchemes"] = schemes
        for path, item in schema["paths"].items():
            if path.startswith(API_PREFIX):
                for operation in item.values():
                    operation["security"] = [{name: []} for name in schemes]
                    _add_answers(operation["responses"], answers)

    return rewrite


def _add_answers(responses: dict[str, Any], answers: Sequence[Answer]) -> None:
    """Add ``answers`` to an operation's ``responses``, into the statuses it documents already."""
    for status, response in error_responses(*answers).items():
        known = responses.setdefault(str(status), response)
        if known is not response:
            codes = _code_enum(known)
            codes += [code for code in response_codes(response) if code not in codes]
            known["description"] += "\n" + response["description"]


def documented_codes(schema: dict[str, Any]) -> dict[tuple[str, str], dict[int, list[str]]]:
    """(method, path) -> status -> the codes documented for it, for tests and tools."""
    found: dict[tuple[str, str], dict[int, list[str]]] = {}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            found[(method.upper(), path)] = {
                int(status): response_codes(response)
                for status, response in operation["responses"].items()
                if int(status) >= 400
            }
    return found


def response_codes(response: dict[str, Any]) -> list[str]:
    """The codes an error response of the document lists (none: not an ErrorBody)."""
    return list(_code_enum(response))


def _code_enum(response: dict[str, Any]) -> list[str]:
    media = response.get("content", {}).get("application/json", {})
    parts: list[dict[str, Any]] = media.get("schema", {}).get("allOf", [])
    for part in parts:
        enum: list[str] | None = part.get("properties", {}).get("code", {}).get("enum")
        if enum is not None:
            return enum
    return []


# --- the answers both apps share ------------------------------------------------------------

INTERNAL_ERROR = Answer(500, "internal_error", "an unexpected error on our side (it is logged).")
REDIS_UNAVAILABLE = Answer(503, "redis_unavailable", "Redis cannot be reached; nothing changed.")
BUSY = Answer(503, "busy", "the task changed under too many concurrent updates; retry.")

INVALID_REQUEST = Answer(
    422,
    "invalid_request",
    "a field, query parameter or header has the wrong type or is out of bounds; `errors` "
    "lists each problem with its location.",
)
INVALID_TASK_ID = Answer(422, "invalid_task_id", "the `{task_id}` is outside the id alphabet.")
TASK_NOT_FOUND = Answer(404, "task_not_found", "no task with this id (or it expired).")
TASK_FINISHED = Answer(409, "task_finished", "the task already ended; `status` says how.")
OUTPUT_NOT_FOUND = Answer(404, "output_not_found", "the task has no output with this index.")
OUTPUT_EXPIRED = Answer(
    410, "output_expired", "the output's retention ended, or it was deleted; it is gone."
)
STORE_UNAVAILABLE = Answer(
    503,
    "store_unavailable",
    "the output store (directory or bucket) cannot be read or written; see Retry-After.",
)
RANGE_NOT_SATISFIABLE = Answer(
    416,
    "range_not_satisfiable",
    "the `Range` asked for lies outside the file (`Content-Range` gives its size).",
)
INVALID_EVENT_ID = Answer(
    400, "invalid_event_id", "`Last-Event-ID` is not an event id of this stream."
)
TOO_MANY_STREAMS = Answer(
    429,
    "too_many_streams",
    "the process serves its `--max-streams` event streams already; see Retry-After.",
)
WORKFLOW_NOT_FOUND = Answer(404, "workflow_not_found", "no workflow template of this name.")
UNAUTHORIZED = Answer(
    401,
    "unauthorized",
    "no credential, or not a valid one (see the security schemes); nothing was read.",
)
IDEMPOTENCY_KEY_REUSE = Answer(
    422,
    "idempotency_key_reuse",
    "the `Idempotency-Key` was used with another request body; choose a new key.",
)
REQUEST_IN_PROGRESS = Answer(
    409,
    "request_in_progress",
    "a request with this `Idempotency-Key` is still being accepted; see Retry-After.",
)
STAGED_INPUT = Answer(
    422,
    "staged_input",
    "the graph names a file under `comfy-stack/`, where other tasks' images are staged; "
    "send images as template parameters.",
)

MALFORMED_JSON = Answer(400, "malformed_json", "the body is not JSON text in UTF-8.")
BODY_TIMEOUT = Answer(
    408, "body_timeout", "the body did not arrive within `--body-read-timeout-s`."
)
BODY_TOO_LARGE = Answer(413, "body_too_large", "the body is larger than `--max-body-bytes`.")
UNSUPPORTED_MEDIA_TYPE = Answer(
    415, "unsupported_media_type", "the Content-Type is not one this route reads."
)
INVALID_NUMBER = Answer(
    422,
    "invalid_number",
    "NaN, an infinity or an integer outside [-(2**63), 2**64 - 1]; `path` says where.",
)
INVALID_STRING = Answer(422, "invalid_string", "a string with a lone surrogate; `path` says where.")
NESTED_TOO_DEEP = Answer(422, "nested_too_deep", "arrays and objects nested over 64 deep.")
GRAPH_TOO_LARGE = Answer(422, "graph_too_large", "the graph has more than `--max-graph-nodes`.")
STRING_TOO_LONG = Answer(
    422, "string_too_long", "a string is longer than `--max-string-bytes`; `path` says where."
)
UNKNOWN_WORKFLOW = Answer(422, "unknown_workflow", "the body names no known workflow template.")
INVALID_PARAMS = Answer(
    422,
    "invalid_params",
    "the template's parameters do not fit it (unknown, wrong type, out of bounds, an image "
    "that is unreadable or too large); `errors` names each one.",
)

MALFORMED_FORM = Answer(400, "malformed_form", "the multipart body cannot be parsed.")
INVALID_FORM = Answer(
    422,
    "invalid_form",
    "the multipart body's parts do not fit: not one `request` field, an unknown plain "
    "field, or file parts for a request that names no workflow.",
)

GENERATE_BODY_ANSWERS = (
    MALFORMED_JSON,
    BODY_TIMEOUT,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID_REQUEST,
    INVALID_NUMBER,
    INVALID_STRING,
    NESTED_TOO_DEEP,
    GRAPH_TOO_LARGE,
    STRING_TOO_LONG,
    UNKNOWN_WORKFLOW,
    INVALID_PARAMS,
    STAGED_INPUT,
    IDEMPOTENCY_KEY_REUSE,
    REQUEST_IN_PROGRESS,
)
"""What accepting a ``POST /generate`` body can answer, on both apps."""

FORM_ANSWERS = (MALFORMED_FORM, INVALID_FORM)
"""What reading a ``multipart/form-data`` body can answer besides."""

TASK_PATH_ANSWERS = (INVALID_TASK_ID, TASK_NOT_FOUND, REDIS_UNAVAILABLE)
"""What every ``/tasks/{task_id}`` route can answer."""

OUTPUT_FILE = {
    "description": "The file, as ComfyUI serves it (an image, a video...), or the UTF-8 "
    "text a node reported (text/plain).",
    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
}
"""The 200 of ``/tasks/{task_id}/outputs/{index}``."""

PRESIGNED_REDIRECT = {
    "description": "With `--outputs-redirect` and an S3 store: the file's presigned URL, in "
    "`Location` (valid 5 minutes).",
}
