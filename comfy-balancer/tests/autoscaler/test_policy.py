"""The autoscaler's decision as a table: nodes, pressure and cooldowns in, actions out."""

from __future__ import annotations

import dataclasses

import pytest

from comfy_balancer.autoscaler.policy import (
    Action,
    Cooldowns,
    ManagedNode,
    Pressure,
    ScalingLimits,
    Verb,
    decide,
)
from comfy_balancer.registry import NodeState

LIMITS = ScalingLimits(
    min_nodes=1,
    max_nodes=3,
    target_wait_s=30,
    idle_s=60,
    up_cooldown_s=60,
    down_cooldown_s=120,
    boot_timeout_s=300,
)
GPUS = ("0", "1", "2", "3")
CALM = Pressure(pending=0, wait_s=0.0, live_nodes=1)
RUSH = Pressure(pending=20, wait_s=45.0, live_nodes=1)
NO_COOLDOWN = Cooldowns()


def node(gpu: str, state: NodeState | None = NodeState.READY, **fields: object) -> ManagedNode:
    base = ManagedNode(node_id=f"gpu-{gpu}", gpu=gpu, running=True, up_s=600, state=state)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def verbs(*nodes: ManagedNode, pressure: Pressure = CALM, **kw: object) -> list[tuple[Verb, str]]:
    limits = kw.pop("limits", LIMITS)
    cooldowns = kw.pop("cooldowns", NO_COOLDOWN)
    gpus = kw.pop("gpus", GPUS)
    decision = decide(nodes, pressure, limits, cooldowns, gpus)  # type: ignore[arg-type]
    return [(action.verb, action.gpu) for action in decision.actions]


# ---------------------------------------------------------------- minimum and maximum


def test_an_empty_fleet_gets_its_minimum_at_once() -> None:
    two = dataclasses.replace(LIMITS, min_nodes=2)
    assert verbs(limits=two) == [(Verb.START, "0"), (Verb.START, "1")]


def test_the_minimum_ignores_the_cooldown() -> None:
    assert verbs(cooldowns=Cooldowns(up_left_s=50)) == [(Verb.START, "0")]


def test_gpus_are_handed_out_in_pool_order_skipping_held_ones() -> None:
    two = dataclasses.replace(LIMITS, min_nodes=3)
    assert verbs(node("1"), limits=two) == [(Verb.START, "0"), (Verb.START, "2")]


def test_a_node_being_retired_does_not_count_towards_the_minimum() -> None:
    retiring = node("0", NodeState.DRAINING, in_flight=1, retiring=True)
    assert verbs(retiring) == [(Verb.START, "1")]


def test_over_the_maximum_the_slowest_are_drained() -> None:
    one = dataclasses.replace(LIMITS, max_nodes=1)
    nodes = (node("0", speed=1.0), node("1", speed=0.5), node("2", speed=2.0))
    assert verbs(*nodes, limits=one) == [(Verb.DRAIN, "1"), (Verb.DRAIN, "0")]


def test_no_gpu_left_no_start() -> None:
    decision = decide([], RUSH, LIMITS, NO_COOLDOWN, gpus=[])
    assert decision.actions == ()
    assert "no free GPU" in decision.reason


# ---------------------------------------------------------------- scale up


def test_a_wait_over_the_target_starts_a_node() -> None:
    decision = decide([node("0", NodeState.BUSY, in_flight=2)], RUSH, LIMITS, NO_COOLDOWN, GPUS)
    assert decision.actions == (
        Action(Verb.START, "gpu-1", "1", "20 waiting, predicted wait 45 s over target 30 s"),
    )
    assert decision.scaled_up


@pytest.mark.parametrize(
    ("wait_s", "live", "started"),
    [
        (31, 1, 1),  # just over: one more
        (60, 1, 1),  # twice the target: a second node halves it
        (61, 1, 2),  # a bit more than twice: two more
        (300, 1, 2),  # capped by max_nodes (3, one running)
        (45, 2, 1),  # 2 nodes at 45 s -> 3 nodes at 30 s
    ],
)
def test_enough_nodes_are_started_to_bring_the_wait_to_the_target(
    wait_s: float, live: int, started: int
) -> None:
    pressure = Pressure(pending=10, wait_s=wait_s, live_nodes=live)
    nodes = [node(str(i), NodeState.BUSY, in_flight=2) for i in range(min(live, 2))]
    assert verbs(*nodes, pressure=pressure)[: started + 1] == [
        (Verb.START, gpu) for gpu in GPUS[len(nodes) : len(nodes) + started]
    ]


def test_a_wait_at_the_target_is_fine() -> None:
    at_target = Pressure(pending=3, wait_s=30.0, live_nodes=1)
    assert verbs(node("0", NodeState.BUSY, in_flight=2), pressure=at_target) == []


def test_work_but_no_live_node_starts_one() -> None:
    """Nothing to measure the wait with: a queue counts as over the target."""
    dead = Pressure(pending=1, wait_s=None, live_nodes=0)
    assert verbs(node("0", NodeState.COMFYUI_DOWN, in_flight=1), pressure=dead) == [
        (Verb.START, "1")
    ]


def test_no_scale_up_during_the_cooldown() -> None:
    decision = decide([node("0", NodeState.BUSY)], RUSH, LIMITS, Cooldowns(up_left_s=12), GPUS)
    assert decision.actions == ()
    assert "scale-up cooldown, 12 s left" in decision.reason


def test_no_scale_up_while_a_node_is_still_starting() -> None:
    starting = node("1", None, up_s=20)
    decision = decide([node("0", NodeState.BUSY), starting], RUSH, LIMITS, NO_COOLDOWN, GPUS)
    assert decision.actions == ()
    assert "waiting for gpu-1 to start" in decision.reason


@pytest.mark.parametrize("state", [NodeState.WARMING_UP, NodeState.DEAD, NodeState.COMFYUI_DOWN])
def test_a_node_not_live_yet_is_starting(state: NodeState) -> None:
    assert verbs(node("0", NodeState.BUSY), node("1", state, up_s=20), pressure=RUSH) == []


def test_at_the_maximum_no_scale_up() -> None:
    nodes = [node(gpu, NodeState.BUSY) for gpu in "012"]
    decision = decide(nodes, RUSH, LIMITS, NO_COOLDOWN, GPUS)
    assert decision.actions == ()
    assert "at max 3 node(s)" in decision.reason


def test_under_pressure_a_retiring_node_is_undrained_rather_than_a_new_one_started() -> None:
    nodes = (
        node("0", NodeState.BUSY),
        node("1", NodeState.DRAINING, in_flight=1, retiring=True, speed=0.5),
        node("2", NodeState.DRAINING, in_flight=1, retiring=True, speed=2.0),
    )
    assert verbs(*nodes, pressure=RUSH) == [(Verb.UNDRAIN, "2")]


def test_a_node_an_admin_drained_is_never_undrained() -> None:
    admin_drained = node("1", NodeState.DRAINED)
    assert verbs(node("0", NodeState.BUSY), admin_drained, pressure=RUSH) == [(Verb.START, "2")]


# ---------------------------------------------------------------- scale down


def test_a_node_idle_past_the_threshold_is_drained() -> None:
    decision = decide([node("0"), node("1", idle_s=61)], CALM, LIMITS, NO_COOLDOWN, GPUS)
    assert [(a.verb, a.gpu) for a in decision.actions] == [(Verb.DRAIN, "1")]
    assert decision.reason == "queue empty; idle 61 s, the slowest of 1 idle node(s)"
    assert decision.scaled_down


def test_the_slowest_idle_node_goes_first() -> None:
    nodes = [node(g, idle_s=100, speed=s) for g, s in (("0", 1.0), ("1", 0.4), ("2", 3.0))]
    assert verbs(*nodes) == [(Verb.DRAIN, "1")]


def test_among_equally_fast_nodes_the_youngest_goes_first() -> None:
    nodes = [node("0", idle_s=100, up_s=900), node("1", idle_s=100, up_s=100)]
    assert verbs(*nodes) == [(Verb.DRAIN, "1")]


def test_one_drain_per_scale_down() -> None:
    nodes = [node(gpu, idle_s=100) for gpu in "012"]
    assert len(verbs(*nodes)) == 1


def test_never_below_the_minimum() -> None:
    assert verbs(node("0", idle_s=1000)) == []


@pytest.mark.parametrize(
    "busy",
    [
        node("1", idle_s=59),  # not idle long enough
        node("1", NodeState.BUSY, in_flight=2, idle_s=100),
        node("1", in_flight=1, idle_s=100),
        node("1", NodeState.WARMING_UP, idle_s=100, up_s=20),
    ],
)
def test_a_node_that_is_not_idle_is_kept(busy: ManagedNode) -> None:
    assert verbs(node("0"), busy) == []


def test_no_scale_down_during_the_cooldown() -> None:
    decision = decide(
        [node("0"), node("1", idle_s=100)], CALM, LIMITS, Cooldowns(down_left_s=30), GPUS
    )
    assert decision.actions == ()
    assert "scale-down cooldown, 30 s left" in decision.reason


def test_no_scale_down_while_the_wait_is_over_the_target_at_max() -> None:
    nodes = [node("0", idle_s=100), node("1", NodeState.BUSY), node("2", NodeState.BUSY)]
    assert verbs(*nodes, pressure=RUSH) == []


def test_work_under_the_target_still_lets_an_idle_node_go() -> None:
    light = Pressure(pending=1, wait_s=5.0, live_nodes=2)
    assert verbs(node("0", NodeState.BUSY), node("1", idle_s=100), pressure=light) == [
        (Verb.DRAIN, "1")
    ]


# ---------------------------------------------------------------- clean-up


def test_a_retired_node_is_removed_once_drained_with_nothing_in_flight() -> None:
    retired = node("1", NodeState.DRAINED, retiring=True)
    assert verbs(node("0"), retired) == [(Verb.REMOVE, "1")]


def test_a_retiring_node_with_work_is_kept() -> None:
    draining = node("1", NodeState.DRAINING, retiring=True, in_flight=1)
    assert verbs(node("0"), draining) == []


def test_a_retired_node_whose_service_is_gone_is_removed() -> None:
    assert verbs(node("0"), node("1", NodeState.DEAD, retiring=True)) == [(Verb.REMOVE, "1")]


def test_a_container_stopped_past_the_grace_is_removed_and_its_gpu_handed_out_later() -> None:
    decision = decide([node("0", running=False, down_s=61)], CALM, LIMITS, NO_COOLDOWN, GPUS)
    assert [(a.verb, a.gpu) for a in decision.actions] == [(Verb.REMOVE, "0"), (Verb.START, "1")]
    assert decision.actions[0].reason == "its container stopped 61 s ago"


def test_a_container_just_stopped_is_left_to_the_engine_and_still_counted() -> None:
    """An engine restart stops every container, then starts them again: no replacement."""
    assert verbs(node("0", None, running=False, down_s=5)) == []
    assert verbs(node("0", None, running=False, down_s=5, in_flight=1), pressure=RUSH) == [
        (Verb.START, "1")  # the wait is over the target: capacity is added, nothing removed
    ]


def test_a_stopped_container_is_removed_even_with_tasks_in_flight() -> None:
    """They are lost with it anyway: the balancer re-queues a dead node's tasks."""
    assert verbs(node("0", None, running=False, down_s=61, in_flight=2)) == [
        (Verb.REMOVE, "0"),
        (Verb.START, "1"),
    ]


def test_a_failed_warm_up_is_removed() -> None:
    assert verbs(node("0"), node("1", NodeState.WARM_UP_FAILED)) == [(Verb.REMOVE, "1")]


def test_a_node_not_live_after_the_boot_timeout_is_removed() -> None:
    late = node("1", None, up_s=301)
    decision = decide([node("0"), late], CALM, LIMITS, NO_COOLDOWN, GPUS)
    assert [(a.verb, a.gpu) for a in decision.actions] == [(Verb.REMOVE, "1")]
    assert decision.actions[0].reason == "not live 301 s after start (boot timeout 300 s)"


def test_an_admin_drained_node_is_left_alone() -> None:
    assert verbs(node("0"), node("1", NodeState.DRAINED, up_s=10_000)) == []


def test_a_node_with_work_is_never_removed_unless_its_container_stopped() -> None:
    stuck = node("1", NodeState.COMFYUI_DOWN, in_flight=1, up_s=10_000)
    assert verbs(node("0"), stuck) == []


def test_node_ids_follow_the_gpu() -> None:
    limits = dataclasses.replace(LIMITS, node_prefix="auto-")
    assert limits.node_id_for("GPU-1a2b/3") == "auto-GPU-1a2b-3"
    assert limits.node_id_for("x" * 100) == "auto-" + "x" * 59
