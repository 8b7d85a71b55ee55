"""Every record change as a table: record + event -> new record, or a refusal. No Redis."""

from datetime import UTC, datetime

import pytest

from comfy_shared.lifecycle import (
    Accepted,
    AttemptOver,
    AttemptRef,
    Cancelled,
    Ended,
    Placed,
    Progressed,
    Refused,
    RetryReason,
    Started,
    TakenBack,
    TaskEvent,
    TurnedAway,
    apply,
    retry_reason,
)
from comfy_shared.models import (
    Attempt,
    ErrorType,
    OutputKind,
    Progress,
    RetryPolicy,
    TaskError,
    TaskOutput,
    TaskRecord,
)
from comfy_shared.task_state import TaskStatus, can_transition

POLICY = RetryPolicy(max_attempts=3, retry_on=["OutOfMemoryError"])
ON_A = AttemptRef("a", 1)
OOM = TaskError(
    type=ErrorType.COMFYUI,
    message="node 3 (KSampler) failed: torch.OutOfMemoryError: CUDA out of memory",
    details={"exception_type": "torch.OutOfMemoryError"},
)
IMAGE = TaskOutput(node_id="9", kind=OutputKind.IMAGE, filename="x.png")


def queued() -> TaskRecord:
    return TaskRecord(id="t", retry=POLICY)


def placed_on(node_id: str = "a", *, earlier: int = 0) -> TaskRecord:
    """A balancer task placed on ``node_id`` after ``earlier`` attempts elsewhere."""
    record = queued()
    for _ in range(earlier):
        record = apply(
            apply(record, Placed("z")), TakenBack(AttemptRef("z", record.attempts + 1), "lost")
        )
    return apply(record, Placed(node_id))


def running_on_a() -> TaskRecord:
    return apply(placed_on("a"), Started(ON_A))


def test_placing_starts_a_new_attempt() -> None:
    record = placed_on("b", earlier=1)

    assert (record.status, record.node_id, record.attempts) == (TaskStatus.DISPATCHED, "b", 2)
    assert [(a.number, a.node_id) for a in record.attempt_log] == [(1, "z"), (2, "b")]
    assert record.attempt_log[0].outcome == "lost"
    with pytest.raises(Refused):
        apply(record, Placed("c"))  # no longer queued


def test_a_turned_away_placement_is_undone_as_if_never_made() -> None:
    record = placed_on("a", earlier=1)

    undone = apply(record, TurnedAway(AttemptRef("a", 2)))

    assert (undone.status, undone.node_id, undone.attempts) == (TaskStatus.QUEUED, None, 1)
    assert [a.node_id for a in undone.attempt_log] == ["z"]


def test_nothing_to_undo_once_the_node_took_it_or_it_moved_on() -> None:
    accepted = apply(placed_on("a"), Accepted(ON_A, "p-1"))
    with pytest.raises(Refused):
        apply(accepted, TurnedAway(ON_A))
    with pytest.raises(AttemptOver):
        apply(placed_on("b"), TurnedAway(ON_A))


def test_acceptance_marks_the_attempt_with_its_prompt_and_warnings() -> None:
    accepted = apply(placed_on("a"), Accepted(ON_A, "p-1", {"7": {"errors": []}}))

    assert accepted.submitted_at is not None
    assert accepted.warnings == {"7": {"errors": []}}
    assert accepted.attempt_log[-1].prompt_id == "p-1"


def test_start_and_progress() -> None:
    running = running_on_a()
    assert (running.status, running.progress) == (TaskStatus.RUNNING, Progress())
    with pytest.raises(Refused) as refused:
        apply(running, Started(ON_A))
    assert not isinstance(refused.value, AttemptOver)  # seen already: nothing to stop

    assert running.attempt_log[-1].started_at == running.started_at is not None

    stepped = apply(placed_on("a"), Progressed(ON_A, "5", 3, 20))  # the start event was missed
    assert stepped.status is TaskStatus.RUNNING
    assert stepped.started_at is not None
    assert stepped.attempt_log[-1].started_at == stepped.started_at
    assert stepped.progress == Progress(node="5", value=3, max=20)


def test_success_keeps_the_outputs_shows_100_percent_and_closes_the_attempt() -> None:
    stepped = apply(running_on_a(), Progressed(ON_A, "3", 17, 20))

    done = apply(stepped, Ended(ON_A, outputs=[IMAGE]))

    assert done.status is TaskStatus.SUCCEEDED
    assert done.outputs == [IMAGE]
    assert done.progress is not None
    assert done.progress.percent == 100.0
    assert done.finished_at is not None
    assert (done.attempt_log[-1].outcome, done.error) == ("succeeded", None)
    assert done.attempt_log[-1].ended_at == done.finished_at
    no_steps = apply(running_on_a(), Ended(ON_A))
    assert no_steps.progress is not None
    assert no_steps.progress.percent == 100.0


def test_a_failure_the_policy_covers_goes_back_to_the_queue_with_its_attempt_logged() -> None:
    again = apply(running_on_a(), Ended(ON_A, error=OOM))

    assert (again.status, again.node_id, again.error, again.progress) == (
        TaskStatus.QUEUED, None, None, None,
    )  # fmt: skip
    assert again.attempt_log[-1].outcome == f"failed: {OOM.message}"
    assert again.attempt_log[-1].ended_at is not None
    assert again.attempt_log[-1].started_at is not None  # what the attempt ran stays known


@pytest.mark.parametrize(
    ("error", "earlier", "policy"),
    [
        (OOM, 2, POLICY),  # the third attempt was the last
        (OOM.model_copy(update={"message": "IndexError", "details": {}}), 0, POLICY),
        (TaskError(type=ErrorType.VALIDATION, message="bad", details={"node_fault": True}), 0,
         POLICY),
        (OOM, 0, None),  # submitted straight to a node: no retry
    ],
)  # fmt: skip
def test_other_failures_end_the_task(
    error: TaskError, earlier: int, policy: RetryPolicy | None
) -> None:
    record = placed_on("a", earlier=earlier).model_copy(update={"retry": policy})
    attempt = AttemptRef("a", record.attempts)

    failed = apply(record, Ended(attempt, error=error))

    assert failed.status is TaskStatus.FAILED
    assert failed.error == error
    assert failed.attempt_log[-1].outcome == f"failed: {error.message}"


def test_a_lost_node_s_task_is_queued_again_then_fails_once_out_of_attempts() -> None:
    back = apply(placed_on("a"), TakenBack(ON_A, "the node stopped publishing health"))
    assert (back.status, back.node_id, back.attempts) == (TaskStatus.QUEUED, None, 1)

    last = placed_on("a", earlier=2)
    failed = apply(last, TakenBack(AttemptRef("a", 3), "ComfyUI unreachable for 12s"))

    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None
    assert failed.error.type is ErrorType.SERVICE
    assert "gave up after 3 attempts" in failed.error.message
    assert [a["outcome"] for a in failed.error.details["attempts"]] == [
        "lost", "lost", "ComfyUI unreachable for 12s",
    ]  # fmt: skip


LOST = TaskError(type=ErrorType.SERVICE, message="lost", details={"node_fault": True})
VALIDATION = TaskError(type=ErrorType.VALIDATION, message="bad width")


@pytest.mark.parametrize(
    ("record", "event", "reason"),
    [
        (running_on_a(), TakenBack(ON_A, "the node stopped publishing health"),
         RetryReason.NODE_LOST),
        (running_on_a(), Ended(ON_A, error=LOST), RetryReason.NODE_FAULT),
        (running_on_a(), Ended(ON_A, error=OOM), RetryReason.RETRY_ON),
        (placed_on("a"), TurnedAway(ON_A), None),  # undone: no attempt spent
        (running_on_a(), Ended(ON_A, error=VALIDATION), None),  # failed for good
        (placed_on("a", earlier=2), TakenBack(AttemptRef("a", 3), "lost"), None),  # out of them
        (running_on_a(), Ended(ON_A, outputs=[IMAGE]), None),
        (running_on_a(), Cancelled(), None),
    ],
)  # fmt: skip
def test_the_reason_of_each_retry(
    record: TaskRecord, event: TaskEvent, reason: RetryReason | None
) -> None:
    assert retry_reason(event, apply(record, event)) is reason


def test_cancel_ends_any_unfinished_task_without_an_error() -> None:
    for record in (queued(), placed_on("a"), running_on_a()):
        cancelled = apply(record, Cancelled())
        assert (cancelled.status, cancelled.error) == (TaskStatus.CANCELLED, None)
        if cancelled.attempt_log:
            assert cancelled.attempt_log[-1].outcome == "cancelled"


NODE_EVENTS: list[TaskEvent] = [
    Accepted(ON_A, "p"),
    Started(ON_A),
    Progressed(ON_A, "3", 1, 2),
    Ended(ON_A),
    Ended(ON_A, error=OOM),
    TakenBack(ON_A, "lost"),
    TurnedAway(ON_A),
]


@pytest.mark.parametrize("event", NODE_EVENTS, ids=lambda event: type(event).__name__)
def test_a_report_about_an_attempt_that_is_over_is_refused(event: TaskEvent) -> None:
    moved = apply(apply(placed_on("a"), TakenBack(ON_A, "lost")), Placed("b"))
    back_on_a = apply(apply(moved, TakenBack(AttemptRef("b", 2), "lost")), Placed("a"))

    for record in (moved, back_on_a):  # elsewhere now, or on the same node as attempt 3
        with pytest.raises(AttemptOver):
            apply(record, event)


@pytest.mark.parametrize(
    "event", [*NODE_EVENTS, Cancelled(), Placed("a")], ids=lambda event: type(event).__name__
)
def test_nothing_applies_to_a_finished_task(event: TaskEvent) -> None:
    for end in (Ended(ON_A), Cancelled()):
        with pytest.raises(AttemptOver):
            apply(apply(placed_on("a"), end), event)


STATES = {
    "queued": queued(),
    "dispatched": placed_on("a"),
    "accepted": apply(placed_on("a"), Accepted(ON_A, "p")),
    "running": running_on_a(),
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize(
    "event", [*NODE_EVENTS, Cancelled(), Placed("a")], ids=lambda event: type(event).__name__
)
def test_every_decided_change_is_one_the_state_machine_allows(state: str, event: TaskEvent) -> None:
    before = STATES[state]
    try:
        after = apply(before, event)
    except Refused:
        return
    assert before.status is after.status or can_transition(before.status, after.status)
    assert after.id == before.id


def test_events_carry_their_own_time() -> None:
    start, at = datetime(2026, 1, 2, 3, 4, 0, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    done = apply(apply(placed_on("a"), Started(ON_A, at=start)), Ended(ON_A, at=at))
    assert (done.started_at, done.finished_at) == (start, at)
    assert done.attempt_log == [
        Attempt(number=1, node_id="a", dispatched_at=done.attempt_log[0].dispatched_at,
                started_at=start, ended_at=at, outcome="succeeded"),
    ]  # fmt: skip
