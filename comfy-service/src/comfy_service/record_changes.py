"""Pure changes of a task record, from what ComfyUI reports (start, progress, final result).

History is the source of truth for outputs: a prompt served from ComfyUI's cache sends no fresh
``executed`` messages, but its history entry lists every file.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from comfy_shared.clock import utc_now
from comfy_shared.comfyui import HistoryEntry, OutputFile
from comfy_shared.comfyui.events import ExecutionError
from comfy_shared.models import ErrorType, OutputKind, TaskError, TaskOutput, TaskRecord
from comfy_shared.models import Progress as TaskProgress
from comfy_shared.task_state import TaskStatus

_KIND_BY_SUFFIX = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"), OutputKind.IMAGE),
    **dict.fromkeys((".gif", ".mp4", ".webm", ".mov", ".mkv", ".avi"), OutputKind.VIDEO),
    **dict.fromkeys((".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"), OutputKind.AUDIO),
}


def task_output(file: OutputFile) -> TaskOutput:
    suffix = PurePosixPath(file.filename).suffix.lower()
    return TaskOutput(
        node_id=file.node_id,
        kind=_KIND_BY_SUFFIX.get(suffix, OutputKind.OTHER),
        filename=file.filename,
        subfolder=file.subfolder,
        type=file.type,
    )


def finish_from_history(record: TaskRecord, entry: HistoryEntry) -> TaskRecord | None:
    """The final record for a prompt ComfyUI has finished, or None if the task already ended
    (it was cancelled or failed by the watchdog before ComfyUI stopped)."""
    if record.status.is_terminal:
        return None
    outputs = [task_output(file) for file in entry.files()]
    finished = {"outputs": outputs, "finished_at": utc_now(), "progress": record.progress}
    if entry.succeeded:
        return record.model_copy(update={"status": TaskStatus.SUCCEEDED, **finished})
    return record.model_copy(
        update={"status": TaskStatus.FAILED, "error": _failure(entry), **finished}
    )


def _failure(entry: HistoryEntry) -> TaskError:
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


def started(record: TaskRecord) -> TaskRecord | None:
    if record.status not in (TaskStatus.QUEUED, TaskStatus.DISPATCHED):
        return None
    return record.model_copy(
        update={"status": TaskStatus.RUNNING, "started_at": utc_now(), "progress": TaskProgress()}
    )


def with_progress(
    record: TaskRecord, node: str | None, value: int, maximum: int
) -> TaskRecord | None:
    if record.status.is_terminal:
        return None
    update: dict[str, object] = {"progress": TaskProgress(node=node, value=value, max=maximum)}
    if record.status is not TaskStatus.RUNNING:
        # The start event was missed (e.g. during a reconnect): a node running proves it.
        update |= {"status": TaskStatus.RUNNING, "started_at": record.started_at or utc_now()}
    return record.model_copy(update=update)


def retry_elsewhere(record: TaskRecord) -> TaskRecord | None:
    """The failed ``record`` back in the queue, if its retry policy allows; else None."""
    error, policy = record.error, record.retry
    if record.status is not TaskStatus.FAILED or error is None or policy is None:
        return None
    if not policy.allows_retry(record.attempts, error):
        return None
    log = [attempt.model_copy() for attempt in record.attempt_log]
    if log:
        log[-1] = log[-1].model_copy(update={"ended_at": utc_now(), "outcome": error.message})
    return record.model_copy(
        update={
            "status": TaskStatus.QUEUED,
            "node_id": None,
            "error": None,
            "progress": None,
            "outputs": [],
            "submitted_at": None,
            "started_at": None,
            "finished_at": None,
            "attempt_log": log,
        }
    )
