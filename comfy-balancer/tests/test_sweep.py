"""The sweep's decision for one slot, as a table: no Redis, no processes."""

from datetime import UTC, datetime

import pytest

from comfy_balancer.registry import NodeView
from comfy_balancer.sweep import (
    STUCK_CLAIM_MS,
    Keep,
    PutBack,
    Release,
    SendAgain,
    SweepAction,
    SweepRules,
    TakeBack,
    sweep_action,
)
from comfy_shared.models import ComfyStatus, NodeHealth, TaskRecord
from comfy_shared.task_state import TaskStatus

RULES = SweepRules(dispatch_timeout_ms=30_000, comfyui_down_grace_s=10)
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def node(*, alive: bool = True, comfy_down_s: float | None = None) -> NodeView:
    comfy = ComfyStatus(reachable=comfy_down_s is None, down_for_s=comfy_down_s)
    health = NodeHealth(
        node_id="a", url="http://a", version="t", started_at=NOW, comfyui=comfy,
        cpu_percent=0, ram_used_bytes=0, ram_total_bytes=1,
    )  # fmt: skip
    return NodeView("a", health if alive else None, last_seen_ms=0, in_flight=1, slots=2)


def task(status: TaskStatus, node_id: str | None = "a", *, accepted: bool = False) -> TaskRecord:
    return TaskRecord(
        id="t", status=status, node_id=node_id, attempts=1,
        submitted_at=NOW if accepted else None,
    )  # fmt: skip


D, R, Q = TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.QUEUED
CASES: list[tuple[str, TaskRecord | None, NodeView, float, bool, bool, SweepAction]] = [
    ("task expired", None, node(), 0, False, False, Release()),
    ("task ended", task(TaskStatus.SUCCEEDED), node(), 0, False, False, Release()),
    ("task moved to b", task(D, "b"), node(), 0, False, False, Release()),
    ("claimed, placement under way", task(Q, None), node(), 1_000, False, False, Keep()),
    ("claimed, its balancer died", task(Q, None), node(), STUCK_CLAIM_MS + 1, False, False,
     PutBack()),
    ("node gone", task(R), node(alive=False), 0, False, True,
     TakeBack("the node stopped publishing health")),
    ("health missing, not long enough to tell", task(R), node(alive=False), 0, False, False,
     Keep()),
    ("comfyui down within the grace", task(R), node(comfy_down_s=9.5), 0, False, False, Keep()),
    ("comfyui down past the grace", task(D), node(comfy_down_s=10.2), 0, False, False,
     TakeBack("ComfyUI unreachable for 10s")),
    ("placement answer lost", task(D), node(), 31_000, False, False, SendAgain()),
    ("placement being sent", task(D), node(), 31_000, True, False, Keep()),
    ("placement accepted by the node", task(D, accepted=True), node(), 31_000, False, False,
     Keep()),
    ("running", task(R, accepted=True), node(), 31_000, False, False, Keep()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "on", "age_ms", "sending", "gone", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_sweep_action_table(
    record: TaskRecord | None,
    on: NodeView,
    age_ms: float,
    sending: bool,
    gone: bool,
    expected: SweepAction,
) -> None:
    action = sweep_action(
        record, on, claimed_age_ms=age_ms, sending=sending, node_gone=gone, rules=RULES
    )
    assert action == expected
