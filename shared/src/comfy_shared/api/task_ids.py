"""The ``{task_id}`` path parameter of every task route: checked against the task id alphabet
before the route runs, so a request never reaches Redis with an id that could address another
task's keys (``X:events`` would name the event stream of task ``X``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from comfy_shared.errors import ComfyStackError
from comfy_shared.models import TASK_ID_ALPHABET, TASK_ID_PATTERN, is_valid_task_id

_SHOWN_CHARS = 64


class InvalidTaskId(ComfyStackError):
    def __init__(self, task_id: str) -> None:
        shown = task_id if len(task_id) <= _SHOWN_CHARS else f"{task_id[:_SHOWN_CHARS]}..."
        super().__init__(f"{shown!r} is not a task id: {TASK_ID_ALPHABET}")


async def task_id_in_path(
    task_id: Annotated[
        str,
        # Documented here but checked below, so a bad id gets its own error code.
        Path(description=TASK_ID_ALPHABET, json_schema_extra={"pattern": TASK_ID_PATTERN}),
    ],
) -> str:
    if not is_valid_task_id(task_id):
        raise InvalidTaskId(task_id)
    return task_id


TaskIdInPath = Annotated[str, Depends(task_id_in_path)]
