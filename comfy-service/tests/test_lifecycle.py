"""The node's lifecycle state: one owner, and what a state means for callers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from comfy_service.api.routes.health import lifecycle_check
from comfy_service.errors import STATUS_FOR, NodeNotReady
from comfy_service.lifecycle import Lifecycle
from comfy_shared.models import NodeReadiness


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_only_ready_accepts_and_each_change_is_dated() -> None:
    clock = Clock()
    lifecycle = Lifecycle(clock)
    assert lifecycle.accepting
    assert lifecycle_check(lifecycle.current()) == "ok"

    clock.now += timedelta(seconds=5)
    lifecycle.warm_up_failed("KSampler: out of memory")
    assert not lifecycle.accepting
    failed = lifecycle.current()
    assert (failed.state, failed.since) == (NodeReadiness.WARM_UP_FAILED, clock.now)
    assert lifecycle_check(failed) == "warm-up-failed: KSampler: out of memory"

    clock.now += timedelta(seconds=5)
    lifecycle.warm_up_failed("KSampler: out of memory")  # the same again: still since then
    assert lifecycle.current().since == failed.since

    lifecycle.comfyui_restarted(recycled=False)
    lifecycle.comfyui_restarted(recycled=True)
    lifecycle.warmed_up()
    assert lifecycle.accepting
    now = lifecycle.current()
    assert (now.reason, now.comfyui_restarts, now.comfyui_recycles) == (None, 2, 1)


def test_a_node_not_ready_answers_503_with_its_lifecycle() -> None:
    lifecycle = Lifecycle()
    lifecycle.recycling("after 500 tasks")
    refusal = NodeNotReady(lifecycle.current())
    mapping = STATUS_FOR[NodeNotReady]
    assert (mapping.status, mapping.code) == (503, "node_not_ready")
    assert "recycling: after 500 tasks" in str(refusal)
