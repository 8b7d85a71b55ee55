"""Reading a ``POST /generate`` body, the same on every app and in every encoding.

1. The media type: ``application/json`` (UTF-8, the only charset JSON has on the wire) on
   both apps, and ``multipart/form-data`` where the app takes file parts (the balancer);
   anything else is 415 ``unsupported_media_type``. A browser can post ``text/plain`` or an
   urlencoded form to another site without asking it first; such a post never gets in.
2. The body, through the strict JSON parser (``strict_json``): from the whole body, or from
   the form's ``request`` field, with each file part as the base64 value of the image
   parameter it is named after (``_form_document``).
3. The bounds of ``request_limits`` (graph nodes, string sizes), the request schema (which
   checks the graph's shape: a node is an object with a ``class_type`` string and an
   ``inputs`` object), then the template's images (bytes, type, pixels).

The routes take the result as a dependency (``JsonGenerateRequest``,
``JsonOrFormGenerateRequest``) rather than let FastAPI parse the body (FastAPI's parser takes
``NaN`` and integers of any size), so FastAPI cannot describe it: ``generate_request_body``
gives the OpenAPI ``requestBody`` to pass as ``openapi_extra``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from comfy_shared.api.request_limits import RequestLimits, check_graph_size, check_string_sizes
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.api.strict_json import JsonPath, parse_strict_json
from comfy_shared.errors import ComfyStackError
from comfy_shared.url_inputs import fetch_url_images
from comfy_shared.workflows import InvalidParams, Template, TemplateLibrary

JSON: Final = "application/json"
FORM: Final = "multipart/form-data"
REQUEST_FIELD: Final = "request"
MAX_FORM_PARTS: Final = 64
"""Parts of a form beyond which it is refused unread (a template has a few images)."""


class UnsupportedMediaType(ComfyStackError):
    def __init__(self, content_type: str | None, accepted: tuple[str, ...]) -> None:
        given = repr(content_type) if content_type else "none"
        super().__init__(
            f"Content-Type {given} is not accepted here; send {' or '.join(accepted)}"
            + (" (UTF-8)" if JSON in accepted else "")
        )


class MalformedForm(ComfyStackError):
    """The multipart body cannot be parsed (400, like JSON that is not JSON)."""


class InvalidForm(ComfyStackError):
    """The form parses but has the wrong parts (422)."""


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


async def read_generate_request(http: Request, *, accepted: tuple[str, ...]) -> GenerateRequest:
    """The checked request of ``http`` (see the module doc); ``accepted``: media types."""
    limits: RequestLimits = http.app.state.request_limits
    templates: TemplateLibrary = http.app.state.templates
    if _media_type(http, accepted) == FORM:
        document = await _form_document(http, templates, limits)
    else:
        document = parse_strict_json(await http.body())
    check_graph_size(document, limits.max_graph_nodes)
    request = generate_request_from_document(document)
    template = templates.get(request.workflow) if request.workflow is not None else None
    image_paths: set[JsonPath] = {("params", name) for name in _image_params(template)}
    check_string_sizes(document, limits.max_string_bytes, skip=image_paths)
    if template is not None:
        await fetch_url_images(template, request.params, http.app.state.url_fetcher)
        template.check_images(request.params, limits.images)
    return request


def _image_params(template: Template | None) -> list[str]:
    return template.image_params() if template is not None else []


def _media_type(http: Request, accepted: tuple[str, ...]) -> str:
    header = http.headers.get("content-type")
    media_type, *parameters = (header or "").split(";")
    media_type = media_type.strip().lower()
    if media_type not in accepted or (media_type == JSON and not _utf8_charset(parameters)):
        raise UnsupportedMediaType(header, accepted)
    return media_type


def _utf8_charset(parameters: list[str]) -> bool:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower() in ("utf-8", "utf8")
    return True


async def _form_document(http: Request, templates: TemplateLibrary, limits: RequestLimits) -> Any:
    """The ``request`` field's JSON, with each file part as the base64 image parameter it is
    named after."""
    try:
        form_reader = http.form(
            max_files=MAX_FORM_PARTS,
            max_fields=MAX_FORM_PARTS,
            max_part_size=limits.max_body_bytes,
        )
        async with form_reader as form:
            document = parse_strict_json(await _request_field(form))
            files = _files_by_name(form)
            if files:
                await _add_images(document, files, templates, limits)
    except HTTPException as exc:
        # Starlette's form parser says "malformed" as a 400 HTTPException; the body's own
        # limits (413, 408) are HTTPExceptions too and pass as they are.
        if exc.status_code != 400:
            raise
        raise MalformedForm(f"the multipart body cannot be parsed: {exc.detail}") from exc
    return document


async def _request_field(form: FormData) -> bytes | str:
    plain_fields = {name for name, value in form.multi_items() if isinstance(value, str)}
    if unknown := sorted(plain_fields - {REQUEST_FIELD}):
        raise InvalidForm(
            f"unknown form fields {unknown}: the JSON request goes in {REQUEST_FIELD!r}, "
            "each image in a file part named after its parameter"
        )
    values = form.getlist(REQUEST_FIELD)
    if len(values) != 1:
        raise InvalidForm(
            f"a multipart body needs exactly one {REQUEST_FIELD!r} field with the JSON "
            f"request; it has {len(values)}"
        )
    value = values[0]
    return await value.read() if isinstance(value, UploadFile) else value


def _files_by_name(form: FormData) -> dict[str, list[UploadFile]]:
    files: dict[str, list[UploadFile]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile) and name != REQUEST_FIELD:
            files.setdefault(name, []).append(value)
    return files


async def _add_images(
    document: Any,
    files: Mapping[str, list[UploadFile]],
    templates: TemplateLibrary,
    limits: RequestLimits,
) -> None:
    """Each file part becomes the value of the image parameter it is named after."""
    if not isinstance(document, dict):
        return  # the schema refuses it, naming what it is
    workflow = document.get("workflow")
    if not isinstance(workflow, str):
        raise InvalidForm(
            "file parts fill the image parameters of a workflow template; this request "
            "names no 'workflow'"
        )
    params = document.setdefault("params", {})
    if not isinstance(params, dict):
        return  # the schema refuses it, naming what it is
    template = templates.get(workflow)
    errors = _file_problems(files, params, template.image_params(), limits.images.max_bytes)
    if errors:
        raise InvalidParams(workflow, errors)
    for name, [upload] in files.items():
        params[name] = base64.b64encode(await upload.read()).decode()


def _file_problems(
    files: Mapping[str, list[UploadFile]],
    params: Mapping[str, Any],
    image_params: list[str],
    max_bytes: int,
) -> dict[str, str]:
    problems = {}
    for name, uploads in files.items():
        if name not in image_params:
            known = ", ".join(image_params) or "none"
            problems[name] = f"a file part, but not an image parameter (those are: {known})"
        elif len(uploads) > 1:
            problems[name] = f"{len(uploads)} file parts; an image parameter takes one"
        elif name in params:
            problems[name] = "given twice: in 'params' and as a file part"
        elif (uploads[0].size or 0) > max_bytes:
            problems[name] = f"image of {uploads[0].size} bytes is larger than {max_bytes}"
    return problems


async def json_generate_request(http: Request) -> GenerateRequest:
    return await read_generate_request(http, accepted=(JSON,))


async def json_or_form_generate_request(http: Request) -> GenerateRequest:
    return await read_generate_request(http, accepted=(JSON, FORM))


JsonGenerateRequest = Annotated[GenerateRequest, Depends(json_generate_request)]
JsonOrFormGenerateRequest = Annotated[GenerateRequest, Depends(json_or_form_generate_request)]

GENERATE_REQUEST_REF: Final = {"$ref": "#/components/schemas/GenerateRequest"}
"""``complete_openapi`` puts GenerateRequest (and the models it uses) in the components."""


def generate_request_body(*, forms: bool = False) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of ``POST /generate``: JSON, and with ``forms`` also
    ``multipart/form-data`` (its parts are named by ``describe_templates``)."""
    content: dict[str, Any] = {JSON: {"schema": GENERATE_REQUEST_REF}}
    if forms:
        content[FORM] = {"schema": {"type": "object"}}
    return {"required": True, "content": content}


def describe_templates(templates: TemplateLibrary) -> Callable[[dict[str, Any]], None]:
    """An OpenAPI rewrite naming what the process's templates allow: ``workflow`` is one of
    their names, and a multipart body's file parts are named after their image parameters."""

    def rewrite(schema: dict[str, Any]) -> None:
        request = schema["components"]["schemas"]["GenerateRequest"]
        for option in request["properties"]["workflow"]["anyOf"]:
            if option.get("type") == "string":
                option["enum"] = templates.names()
        for operation in _generate_operations(schema):
            form = operation["requestBody"]["content"].get(FORM)
            if form is not None:
                form.update(_form_content(templates))

    return rewrite


def _generate_operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        operation
        for path, item in schema["paths"].items()
        if path.endswith("/generate")
        for operation in item.values()
        if "requestBody" in operation
    ]


def _form_content(templates: TemplateLibrary) -> dict[str, Any]:
    image_params = sorted({name for t in templates.all() for name in t.image_params()})
    files = {name: {"type": "string", "format": "binary"} for name in image_params}
    return {
        "schema": {
            "type": "object",
            "properties": {REQUEST_FIELD: GENERATE_REQUEST_REF, **files},
            "required": [REQUEST_FIELD],
            "additionalProperties": False,
            "description": f"The JSON request in the {REQUEST_FIELD!r} field; each file part "
            "fills the image parameter of the workflow named like it (one file each), in "
            "place of its base64 value in `params`.",
        },
        "encoding": {REQUEST_FIELD: {"contentType": JSON}},
    }
