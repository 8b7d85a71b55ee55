"""The task state machine: states, allowed transitions and the terminal set, in one place.

    queued ──► dispatched ──► running ──► succeeded
      ▲  │          │  │         │  │
      │  │          │  └─────────┼──┼──► failed
      │  └──────────┼────────────┼──┴──► cancelled
      └─────────────┴────────────┘
        (requeue after a node is lost)

``queued`` means waiting: in the balancer's pending queue, or (on a service) in ComfyUI's queue.
``dispatched`` is the balancer's view of a task handed to a node that has not started it yet.
Any unfinished state may end directly in a terminal state: a task can finish while nobody
watched (the WebSocket was down), and reconciliation then jumps straight to the result.
"""

from __future__ import annotations

from enum import StrEnum

from comfy_shared.errors import InvalidTransition


class TaskStatus(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)

ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUED: frozenset({TaskStatus.DISPATCHED, TaskStatus.RUNNING} | TERMINAL_STATES),
    TaskStatus.DISPATCHED: frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING} | TERMINAL_STATES),
    TaskStatus.RUNNING: frozenset({TaskStatus.QUEUED} | TERMINAL_STATES),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def check_transition(task_id: str, current: TaskStatus, target: TaskStatus) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(task_id, current, target)
