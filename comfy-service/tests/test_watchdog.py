import pytest

from comfy_service.watchdog import Limits, is_at_head, overdue_reason
from comfy_shared.comfyui import QueueState
from comfy_shared.models import RetryPolicy, TaskRecord
from comfy_shared.task_state import TaskStatus

LIMITS = Limits(start_timeout_s=10, stall_timeout_s=20, task_timeout_s=100, comfyui_down_grace_s=10)
DIRECT, PLACED = None, RetryPolicy()
Q, R = TaskStatus.QUEUED, TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("status", "age_s", "idle_s", "at_head_s", "down_s", "retry", "limit"),
    [
        (Q, 1, 0, 0, 0, DIRECT, None),
        (Q, 101, 0, 0, 0, DIRECT, "task_timeout_s"),
        (R, 101, 0, 0, 0, DIRECT, "task_timeout_s"),
        (R, 50, 21, 0, 0, DIRECT, "stall_timeout_s"),
        (Q, 50, 21, 0, 0, DIRECT, None),  # waiting in the queue is not a stall
        (Q, 50, 0, 11, 0, DIRECT, "start_timeout_s"),
        (R, 50, 19, 0, 0, DIRECT, None),
        (R, 5, 0, 0, 9, DIRECT, None),
        (R, 5, 0, 0, 10, DIRECT, "comfyui_down_grace_s"),
        (Q, 5, 0, 0, 60, PLACED, None),  # the balancer takes its own tasks back
    ],
)
def test_overdue_reason_table(
    status: TaskStatus,
    age_s: float,
    idle_s: float,
    at_head_s: float,
    down_s: float,
    retry: RetryPolicy | None,
    limit: str | None,
) -> None:
    reason = overdue_reason(
        TaskRecord(id="t", status=status, retry=retry),
        age_s=age_s,
        idle_s=idle_s,
        at_head_s=at_head_s,
        comfyui_down_s=down_s,
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
    waiting = TaskRecord(id="t", status=Q)
    assert is_at_head(queue([], ["a", "b"]), waiting, "a")
    assert not is_at_head(queue(["x"], ["a"]), waiting, "a")
    assert not is_at_head(queue([], ["b", "a"]), waiting, "a")
    assert is_at_head(queue(["a"], []), waiting, "a")  # taken by ComfyUI, no start event yet
    assert not is_at_head(queue(["a"], []), TaskRecord(id="t", status=R), "a")
