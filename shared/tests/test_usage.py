"""What an ended task is charged, as a table (no Redis), and how usage hashes read back."""

from datetime import UTC, datetime, timedelta

import pytest

from comfy_shared.models import Attempt, TaskRecord
from comfy_shared.task_state import TaskStatus
from comfy_shared.usage import TaskCounts, Usage, charge_of, gpu_s_by_node

T0 = datetime(2026, 3, 9, 23, 59, 50, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def attempt(number: int, node: str, start: float | None, end: float | None) -> Attempt:
    return Attempt(
        number=number,
        node_id=node,
        dispatched_at=at(-1),
        started_at=at(start) if start is not None else None,
        ended_at=at(end) if end is not None else None,
    )


def ended(status: TaskStatus, attempts: list[Attempt], **fields: object) -> TaskRecord:
    last = attempts[-1] if attempts else None
    record = TaskRecord(
        id="t",
        status=status,
        tenant="acme",
        key_id="k1",
        attempt_log=attempts,
        attempts=len(attempts),
        node_id=last.node_id if last else None,
        started_at=last.started_at if last else None,
        finished_at=at(30),
    )
    return record.model_copy(update=fields)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([attempt(1, "a", 0, 4.25)], {"a": 4.25}),
        # out of memory on a, then run on b: both runs used a GPU
        ([attempt(1, "a", 0, 4), attempt(2, "b", 10, 13.5)], {"a": 4.0, "b": 3.5}),
        # turned away or lost before it started: no GPU time
        ([attempt(1, "a", None, 2), attempt(2, "b", 5, 6)], {"b": 1.0}),
        ([attempt(1, "a", 0, 1), attempt(2, "a", 3, 5)], {"a": 3.0}),
        ([], {}),
    ],
)
def test_gpu_seconds_are_the_runs_of_every_attempt_by_node(
    attempts: list[Attempt], expected: dict[str, float]
) -> None:
    assert gpu_s_by_node(ended(TaskStatus.SUCCEEDED, attempts)) == expected


def test_a_record_without_attempt_starts_is_charged_its_last_run() -> None:
    record = ended(TaskStatus.SUCCEEDED, [attempt(1, "a", None, 30)])
    record.started_at = at(22)

    assert gpu_s_by_node(record) == {"a": 8.0}


def test_a_task_is_charged_to_the_utc_day_it_ended_by_status_workflow_and_node() -> None:
    record = ended(
        TaskStatus.FAILED, [attempt(1, "a", 0, 4), attempt(2, "b", 10, 30)], workflow="demo"
    )

    charge = charge_of(record)

    assert (charge.tenant, charge.key_id, charge.day.isoformat()) == ("acme", "k1", "2026-03-10")
    assert charge.tenant_fields == {
        "tasks:failed": 1,
        "gpu_s:total": 24.0,
        "gpu_s:workflow:demo": 24.0,
        "gpu_s:node:a": 4.0,
        "gpu_s:node:b": 20.0,
    }
    assert charge.key_fields == {"tasks:failed": 1, "gpu_s:total": 24.0}


def test_a_graph_is_the_workflow_graph_and_a_task_that_never_ran_costs_nothing() -> None:
    ran = charge_of(ended(TaskStatus.SUCCEEDED, [attempt(1, "a", 0, 2)]))
    waited = charge_of(ended(TaskStatus.CANCELLED, [], key_id=None))

    assert ran.tenant_fields["gpu_s:workflow:graph"] == 2.0
    assert waited.tenant_fields == {"tasks:cancelled": 1, "gpu_s:total": 0.0}
    assert waited.key_id is None


def test_a_usage_hash_reads_back_and_days_add_up() -> None:
    monday = Usage.from_fields(
        {
            "tasks:succeeded": "2",
            "tasks:cancelled": "1",
            "gpu_s:total": "7.5",
            "gpu_s:workflow:demo": "7.5",
            "gpu_s:node:a": "7.5",
            "tasks:weird": "9",  # a field of a later version: left out
        }
    )
    tuesday = Usage.from_fields(
        {"tasks:failed": "1", "gpu_s:total": ".1", "gpu_s:node:b": ".1", "gpu_s:workflow:x": ".1"}
    )

    both = monday.plus(tuesday)

    assert monday.tasks == TaskCounts(succeeded=2, cancelled=1)
    assert both.tasks == TaskCounts(succeeded=2, failed=1, cancelled=1)
    assert both.gpu_s == 7.6
    assert both.gpu_s_by_workflow == {"demo": 7.5, "x": 0.1}
    assert both.gpu_s_by_node == {"a": 7.5, "b": 0.1}
