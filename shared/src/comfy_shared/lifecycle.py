"""Every change of a task record is decided here: ``apply(record, event) -> new record``.

An event is something that happened to a task: the balancer placed it on a node, the node
turned it away, its prompt reached ComfyUI, it started, made progress, ended, was cancelled,
or the balancer took it back from a node that was lost. :func:`apply` answers with the new
record, or raises :class:`Refused` when the event does not fit the record as it is now: the
task already ended, or the event is about an attempt that is no longer the task's current
one (the task moved to another node meanwhile). A refusal means "do nothing": that is how a
node that was taken for dead can never complete a task that now runs elsewhere.

Pure: no I/O and no clock (events carry their time). The store applies these decisions with
a compare-and-set and checks each status change against the state machine (``task_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from comfy_shared.clock import utc_now
from comfy_shared.models import (
    Attempt,
    ErrorType,
    Progress,
    RetryPolicy,
    TaskError,
    TaskEventKind,
    TaskOutput,
    TaskRecord,
)
from comfy_shared.task_state import TaskStatus


class Refused(Exception):
    """The event does not apply to the task as it is now; nothing changes."""

    def __init__(self, record: TaskRecord, reason: str) -> None:
        super().__init__(f"task {record.id!r}: {reason}")
        self.record = record
        self.reason = reason


class AttemptOver(Refused):
    """The event is about an attempt that is over: the task ended, or moved on to another
    attempt. Whatever still runs for that attempt should be stopped."""


@dataclass(frozen=True, slots=True)
class AttemptRef:
    """One placement of a task: the node it is on and the attempt's number. Every event a node
    reports names its attempt, so a late report about an earlier attempt is refused."""

    node_id: str
    number: int


# --- events of the balancer -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placed:
    """A queued task handed to a node: a new attempt."""

    node_id: str
    policy: RetryPolicy | None = None
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class TurnedAway:
    """The node refused the placement before doing anything (it was overloaded): undone, as if
    never made, so it costs the task no attempt."""

    attempt: AttemptRef


@dataclass(frozen=True, slots=True)
class TakenBack:
    """The attempt's node is lost or unusable: queued again, or failed once out of attempts."""

    attempt: AttemptRef
    reason: str
    at: datetime = field(default_factory=utc_now)


# --- events of the node running an attempt ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """The attempt's prompt reached ComfyUI (with the node errors of skipped output branches)."""

    attempt: AttemptRef
    prompt_id: str
    warnings: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class Started:
    attempt: AttemptRef
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class Progressed:
    """A node of the graph runs, at step ``value`` of ``maximum`` (0 of 0: no steps)."""

    attempt: AttemptRef
    node: str | None
    value: int = 0
    maximum: int = 0
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class Ended:
    """The attempt is over: succeeded with its outputs, or failed with ``error``. A failure the
    task's retry policy covers sends the task back to the queue for another node."""

    attempt: AttemptRef
    outputs: list[TaskOutput] = field(default_factory=list)
    error: TaskError | None = None
    at: datetime = field(default_factory=utc_now)


# --- events of the caller ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cancelled:
    at: datetime = field(default_factory=utc_now)


TaskEvent = Placed | TurnedAway | TakenBack | Accepted | Started | Progressed | Ended | Cancelled


def apply(record: TaskRecord, event: TaskEvent) -> TaskRecord:
    """The record after ``event``; raises :class:`Refused` if the event does not apply."""
    if record.status.is_terminal:
        raise AttemptOver(record, f"it already {record.status.value}")
    match event:
        case Placed():
            return _placed(record, event)
        case TurnedAway():
            return _turned_away(_current(record, event.attempt), event)
        case TakenBack():
            return _taken_back(_current(record, event.attempt), event)
        case Accepted():
            return _accepted(_current(record, event.attempt), event)
        case Started():
            return _started(_current(record, event.attempt), event)
        case Progressed():
            return _progressed(_current(record, event.attempt), event)
        case Ended():
            return _ended(_current(record, event.attempt), event)
        case Cancelled():
            return _close(record, TaskStatus.CANCELLED, event.at, "cancelled")


class RetryReason(StrEnum):
    """Why a task went back to the queue for another attempt (a closed set: a metric's label)."""

    NODE_LOST = "node_lost"
    """The balancer took it back: its node is gone, its ComfyUI was down too long, or the
    placement could not be sent."""
    NODE_FAULT = "node_fault"
    """Its node ended it with an error that is the node's fault (e.g. its ComfyUI restarted)."""
    RETRY_ON = "retry_on"
    """ComfyUI failed it with an error the retry policy's ``retry_on`` names (out of memory...)."""


def retry_reason(event: TaskEvent, after: TaskRecord) -> RetryReason | None:
    """Why ``event``, which made ``after``, sent the task back for another attempt; None if it
    did not (a node turning a placement away costs no attempt: no retry)."""
    if after.status is not TaskStatus.QUEUED:
        return None
    match event:
        case TakenBack():
            return RetryReason.NODE_LOST
        case Ended(error=TaskError() as error):
            node_fault = error.details.get("node_fault") is True
            return RetryReason.NODE_FAULT if node_fault else RetryReason.RETRY_ON
    return None


def stream_kind(event: TaskEvent) -> TaskEventKind:
    """How the change is labelled in the task's event stream."""
    return "progress" if isinstance(event, Progressed) else "state"


def current_attempt(record: TaskRecord) -> AttemptRef | None:
    """The attempt the task is on now, if it is on a node."""
    return AttemptRef(record.node_id, record.attempts) if record.node_id else None


def _current(record: TaskRecord, attempt: AttemptRef) -> TaskRecord:
    if record.node_id != attempt.node_id or record.attempts != attempt.number:
        where = f"attempt {record.attempts} on {record.node_id or 'the queue'}"
        raise AttemptOver(record, f"attempt {attempt.number} on {attempt.node_id} is over: {where}")
    return record


def _placed(record: TaskRecord, event: Placed) -> TaskRecord:
    if record.status is not TaskStatus.QUEUED:
        raise Refused(record, f"it is {record.status.value}, not queued")
    number = record.attempts + 1
    return record.model_copy(
        update={
            "status": TaskStatus.DISPATCHED,
            "node_id": event.node_id,
            "attempts": number,
            "submitted_at": None,
            "retry": event.policy or record.retry,
            "attempt_log": [
                *record.attempt_log,
                Attempt(number=number, node_id=event.node_id, dispatched_at=event.at),
            ],
        }
    )


def _turned_away(record: TaskRecord, event: TurnedAway) -> TaskRecord:
    if record.status is not TaskStatus.DISPATCHED or record.submitted_at is not None:
        raise Refused(record, "the node took the attempt after all")
    return record.model_copy(
        update={
            "status": TaskStatus.QUEUED,
            "node_id": None,
            "attempts": record.attempts - 1,
            "attempt_log": record.attempt_log[:-1],
        }
    )


def _taken_back(record: TaskRecord, event: TakenBack) -> TaskRecord:
    policy = record.retry or RetryPolicy()
    if record.attempts >= policy.max_attempts:
        error = TaskError(
            type=ErrorType.SERVICE,
            message=f"gave up after {record.attempts} attempts; the last one: {event.reason}",
        )
        failed = _close(record, TaskStatus.FAILED, event.at, event.reason, error=error)
        failed.error = error.model_copy(update={"details": _attempts_detail(failed)})
        return failed
    return _requeued(record, event.at, event.reason)


def _accepted(record: TaskRecord, event: Accepted) -> TaskRecord:
    log = _with_last_attempt(record.attempt_log, prompt_id=event.prompt_id)
    return record.model_copy(
        update={"submitted_at": event.at, "warnings": event.warnings, "attempt_log": log}
    )


def _started(record: TaskRecord, event: Started) -> TaskRecord:
    if record.status is TaskStatus.RUNNING:
        raise Refused(record, "it runs already")
    return record.model_copy(
        update={
            "status": TaskStatus.RUNNING,
            "started_at": event.at,
            "progress": Progress(),
            "attempt_log": _with_last_attempt(record.attempt_log, started_at=event.at),
        }
    )


def _progressed(record: TaskRecord, event: Progressed) -> TaskRecord:
    update: dict[str, Any] = {
        "progress": Progress(node=event.node, value=event.value, max=event.maximum)
    }
    if record.status is not TaskStatus.RUNNING:
        # The start event was missed (e.g. during a reconnect): a node running proves it.
        started_at = record.started_at or event.at
        update |= {
            "status": TaskStatus.RUNNING,
            "started_at": started_at,
            "attempt_log": _with_last_attempt(record.attempt_log, started_at=started_at),
        }
    return record.model_copy(update=update)


def _ended(record: TaskRecord, event: Ended) -> TaskRecord:
    if event.error is None:
        done = _close(record, TaskStatus.SUCCEEDED, event.at, "succeeded")
        done.outputs = event.outputs
        done.progress = _complete(record.progress)
        return done
    policy = record.retry
    if policy is not None and policy.allows_retry(record.attempts, event.error):
        return _requeued(record, event.at, f"failed: {event.error.message}")
    failed = _close(record, TaskStatus.FAILED, event.at, f"failed: {event.error.message}")
    failed.outputs = event.outputs
    failed.error = event.error
    return failed


def _close(
    record: TaskRecord,
    status: TaskStatus,
    at: datetime,
    outcome: str,
    *,
    error: TaskError | None = None,
) -> TaskRecord:
    """End the task: terminal status, finish time, the last attempt's end and outcome."""
    return record.model_copy(
        update={
            "status": status,
            "finished_at": at,
            "error": error,
            "attempt_log": _with_last_attempt(record.attempt_log, ended_at=at, outcome=outcome),
        }
    )


def _requeued(record: TaskRecord, at: datetime, outcome: str) -> TaskRecord:
    return record.model_copy(
        update={
            "status": TaskStatus.QUEUED,
            "node_id": None,
            "error": None,
            "progress": None,
            "outputs": [],
            "warnings": {},
            "submitted_at": None,
            "started_at": None,
            "finished_at": None,
            "attempt_log": _with_last_attempt(record.attempt_log, ended_at=at, outcome=outcome),
        }
    )


def _with_last_attempt(log: list[Attempt], **changes: Any) -> list[Attempt]:
    if not log or log[-1].ended_at is not None:
        return list(log)
    return [*log[:-1], log[-1].model_copy(update=changes)]


def _complete(progress: Progress | None) -> Progress:
    """A finished task is at 100 %, whatever its last reported step was."""
    if progress is None or progress.max == 0:
        return Progress(node=progress.node if progress else None, value=1, max=1)
    return progress.model_copy(update={"value": progress.max})


def _attempts_detail(record: TaskRecord) -> dict[str, Any]:
    return {"attempts": [attempt.model_dump(mode="json") for attempt in record.attempt_log]}
