import pytest

from comfy_service.watchdog import Limits, is_at_head, overdue_reason
from comfy_shared.comfyui import QueueState
from comfy_shared.models import TaskRecord
from comfy_shared.task_state import TaskStatus

LIMITS = Limits(start_timeout_s=10, stall_timeout_s=20, task_timeout_s=100)
Q, R = TaskStatus.QUEUED, TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("status", "age_s", "idle_s", "at_head_s", "limit"),
    [
        (Q, 1, 0, 0, None),
        (Q, 101, 0, 0, "task_timeout_s"),
        (R, 101, 0, 0, "task_timeout_s"),
        (R, 50, 21, 0, "stall_timeout_s"),
        (Q, 50, 21, 0, None),  # waiting in the queue is not a stall
        (Q, 50, 0, 11, "start_timeout_s"),
        (R, 50, 19, 0, None),
    ],
)
def test_overdue_reason_table(
    status: TaskStatus, age_s: float, idle_s: float, at_head_s: float, limit: str | None
) -> None:
    reason = overdue_reason(
        TaskRecord(id="t", status=status),
        age_s=age_s,
        idle_s=idle_s,
        at_head_s=at_head_s,
        limits=LIMITS,
    )
    assert (reason.limit if reason else None) == limit


def queue(running: list[str], pending: list[str]) -> QueueState:
    def item(number: int, prompt_id: str) -> list[object]:
        return [number, prompt_id, {}, {}, []]

    return QueueState.model_validate(
        {
            "queue_running": [item(0, p) for p in running],
            "queue_pending": [item(i + 1, p) for i, p in enumerate(pending)],
        }
    )


def test_head_of_queue_means_next_with_nothing_running() -> None:
    waiting = TaskRecord(id="a", status=Q)
    assert is_at_head(queue([], ["a", "b"]), waiting)
    assert not is_at_head(queue(["x"], ["a"]), waiting)
    assert not is_at_head(queue([], ["b", "a"]), waiting)
    assert is_at_head(queue(["a"], []), waiting)  # taken by ComfyUI, no start event yet
    assert not is_at_head(queue(["a"], []), TaskRecord(id="a", status=R))
