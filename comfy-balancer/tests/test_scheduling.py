"""The placement decision as a table: no Redis, no mocks."""

import math
import random
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from comfy_balancer.registry import NodeState, NodeView
from comfy_balancer.scheduling import (
    Demand,
    EarliestFinish,
    LeastLoaded,
    Random,
    RoundRobin,
    pick_node,
    with_assumed_speeds,
)
from comfy_shared.models import (
    ComfyStatus,
    GpuInfo,
    NodeHealth,
    NodeLifecycle,
    NodeReadiness,
    NodeSpeed,
)


def node(
    node_id: str,
    *,
    in_flight: int = 0,
    slots: int = 2,
    failures: int = 0,
    reachable: bool = True,
    alive: bool = True,
    gpu_busy: float | None = None,
    vram_free: int = 0,
    step_s: float | None = None,
    backlog_s: float = 0.0,
    prefetch_lead_s: float = math.inf,
) -> NodeView:
    health = NodeHealth(
        node_id=node_id,
        url=f"http://{node_id}",
        version="1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        comfyui=ComfyStatus(reachable=reachable, vram_free_bytes=vram_free),
        cpu_percent=0,
        ram_used_bytes=0,
        ram_total_bytes=1,
        gpus=[GpuInfo(index=0, name="g", utilization_percent=gpu_busy)] if gpu_busy else [],
    )
    return NodeView(
        node_id=node_id,
        health=health if alive else None,
        last_seen_ms=0,
        in_flight=in_flight,
        slots=slots,
        recent_failures=failures,
        speed=NodeSpeed(seconds_per_step=step_s, overhead_s=0.5, tasks_measured=3)
        if step_s is not None
        else None,
        backlog_s=backlog_s,
        prefetch_lead_s=prefetch_lead_s,
    )


def in_lifecycle(view: NodeView, state: NodeReadiness) -> NodeView:
    assert view.health is not None
    health = view.health.model_copy(update={"lifecycle": NodeLifecycle(state=state)})
    return replace(view, health=health)


def anyone(_: NodeView) -> bool:
    return True


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ([node("a", in_flight=1), node("b")], "b"),
        ([node("a"), node("b")], "a"),  # tie: lowest id
        ([node("a", failures=2), node("b", failures=0)], "b"),
        ([node("a", gpu_busy=90.0), node("b", gpu_busy=10.0)], "b"),
        ([node("a", vram_free=1), node("b", vram_free=9)], "b"),
        ([node("a", in_flight=1, slots=4), node("b", in_flight=1, slots=2)], "a"),
        ([node("a", in_flight=2), node("b", in_flight=1, failures=5)], "b"),  # a is full
    ],
)
def test_least_loaded_table(nodes: list[NodeView], expected: str) -> None:
    chosen = pick_node(nodes, anyone, LeastLoaded())
    assert chosen is not None
    assert chosen.node_id == expected


@pytest.mark.parametrize(
    ("nodes", "state"),
    [
        ([node("a", alive=False)], NodeState.DEAD),
        ([node("a", reachable=False)], NodeState.COMFYUI_DOWN),
        ([node("a", in_flight=2)], NodeState.BUSY),
        ([replace(node("a", in_flight=1), drained=True)], NodeState.DRAINING),
        ([replace(node("a"), drained=True)], NodeState.DRAINED),
        ([in_lifecycle(node("a"), NodeReadiness.WARMING_UP)], NodeState.WARMING_UP),
        ([in_lifecycle(node("a"), NodeReadiness.WARM_UP_FAILED)], NodeState.WARM_UP_FAILED),
        ([in_lifecycle(node("a", in_flight=1), NodeReadiness.RECYCLING)], NodeState.RECYCLING),
        ([in_lifecycle(node("a", reachable=False), NodeReadiness.RECYCLING)], NodeState.RECYCLING),
    ],
)
def test_only_ready_nodes_get_work(nodes: list[NodeView], state: NodeState) -> None:
    assert nodes[0].state is state
    assert pick_node(nodes, anyone, LeastLoaded()) is None


def test_incapable_nodes_are_skipped() -> None:
    nodes = [node("a"), node("b", in_flight=1)]
    chosen = pick_node(nodes, lambda n: n.node_id == "b", LeastLoaded())
    assert chosen is not None
    assert chosen.node_id == "b"
    assert pick_node(nodes, lambda n: False, LeastLoaded()) is None


def test_round_robin_rotates_in_id_order() -> None:
    strategy = RoundRobin()
    nodes = [node("c"), node("a"), node("b")]
    chosen = [pick_node(nodes, anyone, strategy) for _ in range(4)]
    assert [n.node_id for n in chosen if n] == ["a", "b", "c", "a"]


def test_random_follows_its_generator_and_reaches_every_node() -> None:
    nodes = [node("a"), node("b"), node("c")]

    def draws(seed: int) -> list[str]:
        strategy = Random(random.Random(seed))
        return [chosen.node_id for _ in range(30) if (chosen := pick_node(nodes, anyone, strategy))]

    assert draws(7) == draws(7)
    assert set(draws(7)) == {"a", "b", "c"}


def test_a_retry_prefers_nodes_it_has_not_failed_on() -> None:
    nodes = [node("a"), node("b", in_flight=1)]
    chosen = pick_node(nodes, anyone, LeastLoaded(), avoid=frozenset({"a"}))
    assert chosen is not None
    assert chosen.node_id == "b"
    only_a = pick_node([node("a")], anyone, LeastLoaded(), avoid=frozenset({"a"}))
    assert only_a is not None  # better the same node again than no retry at all


FAST, SLOW = 0.1, 0.4  # seconds per step


def fast(**kwargs: Any) -> NodeView:
    return node("fast", step_s=FAST, **kwargs)


def slow(**kwargs: Any) -> NodeView:
    return node("slow", step_s=SLOW, **kwargs)


@pytest.mark.parametrize(
    ("steps", "nodes", "expected"),
    [
        # 20 steps: 2.5 s on the fast node, 8.5 s on the slow one.
        (20, [fast(), slow()], "fast"),
        # The fast node is full but done in 3 s: waiting for it beats starting now on the slow.
        (20, [fast(in_flight=2, backlog_s=3), slow()], "fast"),
        # ... unless its backlog is longer than the difference.
        (20, [fast(in_flight=2, backlog_s=7), slow()], "slow"),
        # A short job goes to the slow node free now rather than wait 3 s.
        (2, [fast(in_flight=2, backlog_s=3), slow()], "slow"),
        # Equal nodes with nothing measured: the one with less work placed.
        (20, [node("a", backlog_s=30, in_flight=1), node("b", backlog_s=10, in_flight=1)], "b"),
        # A tie: a free slot wins over a full node, then the least loaded.
        (20, [node("a", in_flight=2), node("b", in_flight=1), node("c")], "c"),
    ],
)
def test_earliest_finish_table(steps: int, nodes: list[NodeView], expected: str) -> None:
    chosen = pick_node(nodes, anyone, EarliestFinish(), demand=Demand(steps=steps))
    assert chosen is not None
    assert chosen.node_id == expected


def test_earliest_finish_waits_only_for_live_nodes() -> None:
    nodes = [node("fast", step_s=FAST, alive=False), node("slow", step_s=SLOW, in_flight=2)]
    chosen = pick_node(nodes, anyone, EarliestFinish(), demand=Demand(steps=20))
    assert chosen is not None
    assert chosen.node_id == "slow"
    assert not chosen.free_slots  # the task waits for the slow node's slot
    assert pick_node([node("a", reachable=False)], anyone, EarliestFinish()) is None


def test_other_strategies_never_choose_a_full_node() -> None:
    nodes = [node("fast", step_s=FAST, in_flight=2), node("slow", step_s=SLOW)]
    for strategy in (LeastLoaded(), RoundRobin(), Random(random.Random(1))):
        chosen = pick_node(nodes, anyone, strategy, demand=Demand(steps=20))
        assert chosen is not None
        assert chosen.node_id == "slow"


def test_unmeasured_nodes_count_as_the_fleet_average() -> None:
    nodes = with_assumed_speeds([node("a", step_s=0.1), node("b", step_s=0.3), node("new")])
    assumed = {view.node_id: view.speed for view in nodes}
    assert assumed["new"] is not None
    assert assumed["new"].seconds_per_step == pytest.approx(0.2)
    assert assumed["new"].overhead_s == pytest.approx(0.5)
    assert assumed["a"] == nodes[0].speed
    untouched = [node("x"), node("y")]
    assert with_assumed_speeds(untouched) == untouched


@pytest.mark.parametrize(
    ("in_flight", "backlog_s", "free", "opens_in_s"),
    [
        (0, 0.0, 3, 0.0),  # idle: every slot, whatever the lead
        (1, 5.0, 0, 4.5),  # its running task ends in 5 s: the next slot opens in 4.5
        (1, 0.5, 2, 0.0),  # ends within the lead: prefetch now
        (1, 0.2, 2, 0.0),
        (2, 0.4, 1, 0.0),  # the prefetched one too would end within the lead
        (2, 3.0, 0, 2.5),
        (3, 0.1, 0, 0.0),  # full
    ],
)
def test_a_busy_node_takes_a_prefetch_only_within_the_lead(
    in_flight: int, backlog_s: float, free: int, opens_in_s: float
) -> None:
    view = node("a", slots=3, in_flight=in_flight, backlog_s=backlog_s, prefetch_lead_s=0.5)
    assert view.free_slots == free
    assert view.prefetch_opens_in_s == pytest.approx(opens_in_s)


def test_earliest_finish_waits_for_a_held_slot_that_beats_a_slower_free_node() -> None:
    held = fast(in_flight=1, backlog_s=3, prefetch_lead_s=0.5)
    chosen = pick_node([held, slow()], anyone, EarliestFinish(), demand=Demand(steps=20))
    assert chosen is not None
    assert (chosen.node_id, chosen.free_slots) == ("fast", 0)  # the task stays queued
    chosen = pick_node([held, slow()], anyone, LeastLoaded(), demand=Demand(steps=20))
    assert chosen is not None
    assert chosen.node_id == "slow"
