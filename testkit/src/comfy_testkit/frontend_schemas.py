"""What the ComfyUI frontend accepts, as checks for tests: the zod schemas it validates
``/api/jobs`` answers with (``jobTypes.ts``, ``apiSchema.ts`` of ComfyUI_frontend). A page
that fails them is dropped whole by the frontend, so a test asserts every page passes.

``check_jobs_page(body)`` and ``check_job(job, detail=True)`` raise AssertionError naming the
path of the first field that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JOB_STATUSES = {"pending", "in_progress", "completed", "failed", "cancelled"}
RESULT_TYPES = {"input", "output", "temp"}
Check = Callable[[Any, str], None]


def _fail(path: str, wanted: str, value: Any) -> None:
    raise AssertionError(f"{path}: expected {wanted}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        _fail(path, "a string", value)


def number(value: Any, path: str) -> None:
    if not _is_number(value):
        _fail(path, "a number", value)


def boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        _fail(path, "a boolean", value)


def nullable(check: Check) -> Check:
    def checked(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)

    return checked


def array_of(check: Check) -> Check:
    def checked(value: Any, path: str) -> None:
        if not isinstance(value, list):
            _fail(path, "an array", value)
        for index, item in enumerate(value):
            check(item, f"{path}[{index}]")

    return checked


def obj(required: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    """An object with these fields (zod's ``.passthrough()``: others are allowed). An
    optional field may be absent, not null, unless its check allows null."""

    def checked(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, "an object", value)
        for name, check in required.items():
            if name not in value:
                _fail(f"{path}.{name}", "a required field", "nothing")
            check(value[name], f"{path}.{name}")
        for name, check in (optional or {}).items():
            if name in value:
                check(value[name], f"{path}.{name}")

    return checked


def one_of(allowed: set[str]) -> Check:
    def checked(value: Any, path: str) -> None:
        if value not in allowed:
            _fail(path, f"one of {sorted(allowed)}", value)

    return checked


def node_id(value: Any, path: str) -> None:
    if not (isinstance(value, str) or _is_number(value)):
        _fail(path, "a node id", value)


RESULT_ITEM = obj(
    {},
    {"filename": string, "subfolder": string, "type": one_of(RESULT_TYPES), "display_name": string},
)
PREVIEW_OUTPUT = obj(
    {"nodeId": string, "mediaType": string},
    {"filename": string, "subfolder": string, "type": one_of(RESULT_TYPES), "display_name": string},
)
EXECUTION_ERROR = obj(
    {
        "node_id": string,
        "node_type": string,
        "exception_message": string,
        "exception_type": string,
        "traceback": array_of(string),
    },
    {"prompt_id": string, "timestamp": number, "executed": array_of(string)},
)


def _text(value: Any, path: str) -> None:
    if not isinstance(value, str):
        array_of(string)(value, path)


NODE_OUTPUTS = obj(
    {},
    {
        "audio": array_of(RESULT_ITEM),
        "images": array_of(RESULT_ITEM),
        "video": array_of(RESULT_ITEM),
        "animated": array_of(boolean),
        "text": _text,
    },
)


def _outputs(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        _fail(path, "an object of node outputs", value)
    for key, outputs in value.items():
        NODE_OUTPUTS(outputs, f"{path}.{key}")


JOB_FIELDS: dict[str, Check] = {
    "id": string,
    "status": one_of(JOB_STATUSES),
    "create_time": number,
}
OPTIONAL_JOB_FIELDS: dict[str, Check] = {
    "execution_start_time": nullable(number),
    "execution_end_time": nullable(number),
    "preview_output": nullable(PREVIEW_OUTPUT),
    "outputs_count": nullable(number),
    "execution_error": nullable(EXECUTION_ERROR),
    "workflow_id": nullable(string),
    "priority": number,
}
DETAIL_FIELDS: dict[str, Check] = {"outputs": _outputs, "update_time": number}
PAGINATION = obj({"offset": number, "limit": number, "total": number, "has_more": boolean})


def check_job(job: Any, *, detail: bool = False, path: str = "job") -> None:
    optional = OPTIONAL_JOB_FIELDS | (DETAIL_FIELDS if detail else {})
    obj(JOB_FIELDS, optional)(job, path)


def check_jobs_page(body: Any) -> None:
    obj({"jobs": array_of(lambda job, path: check_job(job, path=path)), "pagination": PAGINATION})(
        body, "body"
    )
