"""The JSON messages the gateway's WebSocket writes itself, shaped as ComfyUI's. Pure.

ComfyUI's own messages are relayed as its node sent them; these are the ones a fleet has to
make: ``status`` (the user's queue, not a node's), the closing ``executing {node: null}``, and
the end of a prompt that ComfyUI never announced (cancelled while queued, a node lost, a
failure of ours), built from the task's record.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from comfy_shared.models import ErrorType, TaskRecord
from comfy_shared.task_state import TaskStatus

END_TYPES: Final = {
    TaskStatus.SUCCEEDED: "execution_success",
    TaskStatus.FAILED: "execution_error",
    TaskStatus.CANCELLED: "execution_interrupted",
}
ACCEPTED_ENDS: Final = {
    TaskStatus.SUCCEEDED: frozenset({"execution_success"}),
    TaskStatus.FAILED: frozenset({"execution_error", "execution_interrupted"}),
    TaskStatus.CANCELLED: frozenset({"execution_interrupted"}),
}
"""Which of the node's own end messages tell the truth about a record that ended so: a node
that reported success for a task that failed after all (its outputs could not be stored) is
not believed."""
EXCEPTION_TYPES: Final = {
    ErrorType.SERVICE: "comfy_stack.ServiceError",
    ErrorType.VALIDATION: "comfy_stack.ValidationError",
    ErrorType.COMFYUI: "comfy_stack.ComfyUIError",
}
"""``exception_type`` of an error ComfyUI did not describe itself (a node lost, a time limit)."""


def message(kind: str, data: Any) -> str:
    """A text frame, serialised as ComfyUI does (``json.dumps`` with its default spacing)."""
    return json.dumps({"type": kind, "data": data})


def status(queue_remaining: int, sid: str | None = None) -> str:
    """``status``; only the greeting of a new socket carries its ``sid``."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return message("status", data)


def place_in_queue(ahead: int) -> str:
    """The text a waiting prompt's output nodes show: how many tasks start before it."""
    return "In the queue: next to start" if ahead == 0 else f"In the queue: {ahead} ahead of you"


def executing(task_id: str, node: str | None) -> str:
    """``executing``: a node about to run; ``node`` None closes the prompt."""
    if node is None:
        return message("executing", {"node": None, "prompt_id": task_id})
    return message("executing", {"node": node, "display_node": node, "prompt_id": task_id})


def ending(
    record: TaskRecord, *, node: str | None, node_type: str | None, executed: list[str]
) -> str:
    """The end message ComfyUI would have sent for this record: ``node`` is where the task
    was when it ended (None: nowhere yet), ``executed`` the nodes it had finished."""
    kind = END_TYPES[record.status]
    stamp = _ms(record.finished_at or record.updated_at)
    if record.status is TaskStatus.SUCCEEDED:
        return message(kind, {"prompt_id": record.id, "timestamp": stamp})
    if record.status is TaskStatus.CANCELLED or record.error is None:
        data = {
            "prompt_id": record.id,
            "node_id": node,
            "node_type": node_type,
            "executed": executed,
            "timestamp": stamp,
        }
        return message(kind, data)
    return message(kind, _error_data(record, node, node_type, executed, stamp))


def _error_data(
    record: TaskRecord, node: str | None, node_type: str | None, executed: list[str], stamp: int
) -> dict[str, Any]:
    error = record.error
    assert error is not None
    details = error.details
    return {
        "prompt_id": record.id,
        "node_id": details.get("node_id", node),
        "node_type": details.get("node_type", node_type),
        "executed": details.get("executed", executed),
        "exception_message": details.get("exception_message", error.message),
        "exception_type": details.get("exception_type", EXCEPTION_TYPES[error.type]),
        "traceback": details.get("traceback", []),
        "current_inputs": {},
        "current_outputs": [],
        "timestamp": stamp,
    }


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
