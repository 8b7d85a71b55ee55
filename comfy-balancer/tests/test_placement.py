"""Undoing a placement the node turned away: pure record changes, no Redis."""

from datetime import UTC, datetime

from comfy_balancer.placement import dispatched_to, undone
from comfy_shared.models import RetryPolicy, TaskRecord
from comfy_shared.task_state import TaskStatus

POLICY = RetryPolicy()


def placed(node_id: str = "a") -> TaskRecord:
    first = dispatched_to(TaskRecord(id="t"), "b", POLICY)
    back = first.model_copy(update={"status": TaskStatus.QUEUED, "node_id": None})
    return dispatched_to(back, node_id, POLICY)  # the second attempt, on node_id


def test_an_undone_placement_is_as_if_never_made() -> None:
    record = placed()
    assert record.attempts == 2

    restored = undone(record, "a")

    assert restored is not None
    assert restored.status is TaskStatus.QUEUED
    assert restored.node_id is None
    assert restored.attempts == 1
    assert [attempt.node_id for attempt in restored.attempt_log] == ["b"]


def test_nothing_to_undo_once_the_task_moved_on() -> None:
    assert undone(placed("a"), "other") is None  # placed elsewhere
    submitted = placed().model_copy(update={"submitted_at": datetime.now(UTC)})
    assert undone(submitted, "a") is None  # the node took it after all
    running = placed().model_copy(update={"status": TaskStatus.RUNNING})
    assert undone(running, "a") is None
