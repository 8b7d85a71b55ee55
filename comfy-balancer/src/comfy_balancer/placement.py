"""Pure changes of a task record as the balancer places it, takes it back, or gives up."""

from __future__ import annotations

from comfy_shared.clock import utc_now
from comfy_shared.models import Attempt, ErrorType, RetryPolicy, TaskError, TaskRecord
from comfy_shared.task_state import TaskStatus, check_transition


def dispatched_to(record: TaskRecord, node_id: str, policy: RetryPolicy) -> TaskRecord:
    """A queued task handed to ``node_id``: a new attempt (raises if it is no longer queued)."""
    check_transition(record.id, record.status, TaskStatus.DISPATCHED)
    number = record.attempts + 1
    return record.model_copy(
        update={
            "status": TaskStatus.DISPATCHED,
            "node_id": node_id,
            "attempts": number,
            "submitted_at": None,
            "retry": policy,
            "attempt_log": [*record.attempt_log, Attempt(number=number, node_id=node_id)],
        }
    )


def undone(record: TaskRecord, node_id: str) -> TaskRecord | None:
    """A placement the node turned away before claiming its attempt (it was overloaded):
    queued again as if never placed, so it costs the task no attempt. None when the task is
    no longer that placement."""
    if record.status is not TaskStatus.DISPATCHED or record.node_id != node_id:
        return None
    if record.submitted_at is not None or not record.attempt_log:
        return None
    return record.model_copy(
        update={
            "status": TaskStatus.QUEUED,
            "node_id": None,
            "attempts": record.attempts - 1,
            "attempt_log": record.attempt_log[:-1],
        }
    )


def taken_back(record: TaskRecord, node_id: str, reason: str) -> TaskRecord | None:
    """The task of a lost or refusing node: queued again, or failed once out of attempts.
    None when the task is no longer that node's (it ended, or moved on already)."""
    if record.status.is_terminal or record.node_id != node_id:
        return None
    log = [attempt.model_copy() for attempt in record.attempt_log]
    if log:
        log[-1] = log[-1].model_copy(update={"ended_at": utc_now(), "outcome": reason})
    policy = record.retry or RetryPolicy()
    if record.attempts >= policy.max_attempts:
        error = TaskError(
            type=ErrorType.SERVICE,
            message=f"gave up after {record.attempts} attempts; the last one: {reason}",
            details={"attempts": [attempt.model_dump(mode="json") for attempt in log]},
        )
        return record.model_copy(
            update={
                "status": TaskStatus.FAILED,
                "error": error,
                "finished_at": utc_now(),
                "attempt_log": log,
            }
        )
    return record.model_copy(
        update={
            "status": TaskStatus.QUEUED,
            "node_id": None,
            "progress": None,
            "submitted_at": None,
            "started_at": None,
            "attempt_log": log,
        }
    )


def rejected_by_node(record: TaskRecord, body: dict[str, object]) -> TaskRecord | None:
    """A node answered 422: the graph itself is invalid, so no other node will take it."""
    if record.status.is_terminal:
        return None
    error = TaskError(
        type=ErrorType.VALIDATION,
        message=str(body.get("detail", "the node rejected the graph")),
        details={key: value for key, value in body.items() if key in ("error", "node_errors")},
    )
    return record.model_copy(
        update={"status": TaskStatus.FAILED, "error": error, "finished_at": utc_now()}
    )
