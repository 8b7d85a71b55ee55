"""What ComfyUI reports, in the task's terms: a finished prompt's outputs and error.

History is the source of truth for outputs: a prompt served from ComfyUI's cache sends no fresh
``executed`` messages, but its history entry lists every file, and every text a node reported
(``comfy_shared.outputs.texts``), in the order ComfyUI lists them.
"""

from __future__ import annotations

from comfy_shared.comfyui import HistoryEntry, OutputFile, OutputText
from comfy_shared.comfyui.events import ExecutionError
from comfy_shared.lifecycle import AttemptRef, Ended
from comfy_shared.models import ErrorType, TaskError, TaskOutput
from comfy_shared.outputs.media import kind_of
from comfy_shared.outputs.texts import text_output


def task_output(entry: OutputFile | OutputText) -> TaskOutput:
    if isinstance(entry, OutputText):
        return text_output(entry.node_id, entry.position, entry.text)
    return TaskOutput(
        node_id=entry.node_id,
        kind=kind_of(entry.filename, animated=entry.animated),
        filename=entry.filename,
        subfolder=entry.subfolder,
        type=entry.type,
    )


def ended_from_history(attempt: AttemptRef, entry: HistoryEntry) -> Ended:
    """The end of an attempt whose prompt ComfyUI has finished."""
    outputs = [task_output(produced) for produced in entry.entries()]
    error = None if entry.succeeded else history_failure(entry)
    return Ended(attempt, outputs=outputs, error=error)


def history_failure(entry: HistoryEntry) -> TaskError:
    """Why ComfyUI says a finished prompt failed."""
    status = entry.status
    if status is not None and status.error is not None:
        return execution_error(status.error)
    if status is not None and status.interruption is not None:
        return TaskError(
            type=ErrorType.COMFYUI,
            message="the prompt was interrupted inside ComfyUI, not through this service",
            details={"node_id": status.interruption.node_id},
        )
    reported = status.status_str if status else "no status"
    return TaskError(
        type=ErrorType.COMFYUI, message=f"ComfyUI finished the prompt with {reported!r}"
    )


def execution_error(error: ExecutionError) -> TaskError:
    message = error.exception_message.strip()
    return TaskError(
        type=ErrorType.COMFYUI,
        message=f"node {error.node_id} ({error.node_type}) failed: "
        f"{error.exception_type}: {message}",
        details={
            "node_id": error.node_id,
            "node_type": error.node_type,
            "exception_type": error.exception_type,
            "exception_message": error.exception_message,
            "traceback": error.traceback,
            "executed": error.executed,
        },
    )
