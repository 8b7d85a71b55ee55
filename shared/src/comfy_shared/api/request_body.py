"""Reading a ``POST /generate`` body, the same on every app and in every encoding: the strict
JSON parser first (``strict_json``), then the request schema.

The routes read the body themselves rather than let FastAPI parse it (FastAPI's parser takes
``NaN`` and integers of any size), so FastAPI cannot describe it: ``generate_request_body``
gives the OpenAPI ``requestBody`` to pass as ``openapi_extra``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.api.strict_json import parse_strict_json


def generate_request_from_json(raw: bytes | str) -> GenerateRequest:
    """Raises MalformedJson, an InvalidJsonValue, or RequestValidationError (422
    ``invalid_request``) for a body of the wrong shape."""
    return generate_request_from_document(parse_strict_json(raw))


def generate_request_from_document(document: Any) -> GenerateRequest:
    """``document`` must come from ``parse_strict_json``: the schema does not check numbers."""
    try:
        return GenerateRequest.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from exc


def generate_request_body(more_content: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of ``POST /generate``: the JSON schema of GenerateRequest,
    plus other media types (e.g. ``multipart/form-data``) keyed by content type."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": GenerateRequest.model_json_schema()},
            **(more_content or {}),
        },
    }
