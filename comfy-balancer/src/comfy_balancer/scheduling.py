"""Which node gets a task: pure policy, no I/O and no clock, tested as a table.

Only live nodes (alive, ComfyUI reachable) that are capable (every node class and model file
of the graph) are candidates. ``earliest-finish`` may choose a node whose slots are all taken:
the task then stays queued until that node frees one, because any node free now would finish
it later. The other strategies choose among nodes with a free slot.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from comfy_balancer.registry import NodeView
from comfy_balancer.settings import StrategyName
from comfy_shared.models import NodeSpeed
from comfy_shared.workload import expected_run_s

UNMEASURED = NodeSpeed(seconds_per_step=1.0, overhead_s=0.0, tasks_measured=0)
"""Assumed for every node while none has measured its speed: all alike, so earliest-finish
balances the nodes by sampler steps."""


class Strategy(Protocol):
    name: str

    def choose(self, steps: int, candidates: Sequence[NodeView]) -> NodeView | None:
        """``candidates``: live, capable nodes, some maybe without a free slot."""
        ...


class EarliestFinish:
    """The node where the task would finish first: the node's placed work still to run
    (``backlog_s``) plus the task's expected run time at that node's speed. On a tie a node
    with a free slot wins, then the least loaded.

    On a mixed fleet this keeps long jobs off slow nodes once the fast ones are nearly free,
    which is what decides the makespan when the queue runs dry."""

    name = "earliest-finish"

    def choose(self, steps: int, candidates: Sequence[NodeView]) -> NodeView | None:
        def finish(node: NodeView) -> float:
            return node.backlog_s + expected_run_s(node.speed or UNMEASURED, steps)

        if not candidates:
            return None
        return min(
            candidates, key=lambda node: (finish(node), not node.free_slots, _load_key(node))
        )


class LeastLoaded:
    """Fewest tasks in flight per slot first; then fewer recent failures, a less busy GPU,
    more free VRAM; the node id breaks ties so the choice is deterministic."""

    name = "least-loaded"

    def choose(self, steps: int, candidates: Sequence[NodeView]) -> NodeView | None:
        free = _with_free_slot(candidates)
        return min(free, key=_load_key) if free else None


class RoundRobin:
    """Each choice goes to the next node in id order (the turn counter is per process: the
    rotation is a preference, not a guarantee, when several balancers run)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, steps: int, candidates: Sequence[NodeView]) -> NodeView | None:
        ordered = sorted(_with_free_slot(candidates), key=lambda node: node.node_id)
        if not ordered:
            return None
        chosen = ordered[self._turn % len(ordered)]
        self._turn += 1
        return chosen


class Random:
    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, steps: int, candidates: Sequence[NodeView]) -> NodeView | None:
        free = _with_free_slot(candidates)
        return self._rng.choice(free) if free else None


def make_strategy(name: StrategyName) -> Strategy:
    strategies: dict[str, Callable[[], Strategy]] = {
        "earliest-finish": EarliestFinish,
        "least-loaded": LeastLoaded,
        "round-robin": RoundRobin,
        "random": Random,
    }
    return strategies[name]()


def pick_node(
    nodes: Sequence[NodeView],
    can_run: Callable[[NodeView], bool],
    strategy: Strategy,
    *,
    steps: int = 0,
    avoid: frozenset[str] = frozenset(),
) -> NodeView | None:
    """The node for a task of ``steps`` sampler steps; it may have no free slot (see the
    module's docstring). ``avoid``: nodes an earlier attempt ended on; chosen only when no
    other node will do."""
    candidates = [node for node in nodes if node.is_live and can_run(node)]
    preferred = [node for node in candidates if node.node_id not in avoid]
    chosen = strategy.choose(steps, preferred) if preferred else None
    return chosen or strategy.choose(steps, candidates)


def with_assumed_speeds(nodes: Sequence[NodeView]) -> list[NodeView]:
    """Nodes yet to measure their speed are taken for the fleet's average measured node."""
    measured = [node.speed for node in nodes if node.speed is not None]
    if not measured:
        return list(nodes)
    average = NodeSpeed(
        seconds_per_step=sum(speed.seconds_per_step for speed in measured) / len(measured),
        overhead_s=sum(speed.overhead_s for speed in measured) / len(measured),
        tasks_measured=0,
    )
    return [node if node.speed else replace(node, speed=average) for node in nodes]


def _with_free_slot(candidates: Sequence[NodeView]) -> list[NodeView]:
    return [node for node in candidates if node.free_slots]


def _load_key(node: NodeView) -> tuple[float, int, float, float, str]:
    health = node.health
    gpus = health.gpus if health else []
    utilisation = [gpu.utilization_percent or 0.0 for gpu in gpus]
    gpu_busy = sum(utilisation) / len(utilisation) if utilisation else 0.0
    vram_free = float(health.comfyui.vram_free_bytes or 0) if health else 0.0
    return (node.in_flight / node.slots, node.recent_failures, gpu_busy, -vram_free, node.node_id)
