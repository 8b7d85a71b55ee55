"""Which node gets a task: pure policy, no I/O and no clock, tested as a table.

Only nodes that are ready (alive, ComfyUI reachable, a free slot) and capable (every node
class and model file of the graph) are candidates; a strategy picks one of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from comfy_balancer.registry import NodeState, NodeView
from comfy_balancer.settings import StrategyName


class Strategy(Protocol):
    name: str

    def choose(self, candidates: Sequence[NodeView]) -> NodeView: ...


class LeastLoaded:
    """Fewest tasks in flight per slot first; then fewer recent failures, a less busy GPU,
    more free VRAM; the node id breaks ties so the choice is deterministic."""

    name = "least-loaded"

    def choose(self, candidates: Sequence[NodeView]) -> NodeView:
        return min(candidates, key=_load_key)


class RoundRobin:
    """Each choice goes to the next node in id order (the turn counter is per process: the
    rotation is a preference, not a guarantee, when several balancers run)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[NodeView]) -> NodeView:
        ordered = sorted(candidates, key=lambda node: node.node_id)
        chosen = ordered[self._turn % len(ordered)]
        self._turn += 1
        return chosen


class Random:
    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[NodeView]) -> NodeView:
        return self._rng.choice(list(candidates))


def make_strategy(name: StrategyName) -> Strategy:
    strategies: dict[str, Callable[[], Strategy]] = {
        "least-loaded": LeastLoaded,
        "round-robin": RoundRobin,
        "random": Random,
    }
    return strategies[name]()


def pick_node(
    nodes: Sequence[NodeView],
    can_run: Callable[[NodeView], bool],
    strategy: Strategy,
    avoid: frozenset[str] = frozenset(),
) -> NodeView | None:
    """``avoid``: nodes an earlier attempt ended on; chosen only when no other node fits."""
    candidates = [
        node
        for node in nodes
        if node.state is NodeState.READY and node.free_slots and can_run(node)
    ]
    preferred = [node for node in candidates if node.node_id not in avoid]
    return strategy.choose(preferred or candidates) if candidates else None


def _load_key(node: NodeView) -> tuple[float, int, float, float, str]:
    health = node.health
    gpus = health.gpus if health else []
    utilisation = [gpu.utilization_percent or 0.0 for gpu in gpus]
    gpu_busy = sum(utilisation) / len(utilisation) if utilisation else 0.0
    vram_free = float(health.comfyui.vram_free_bytes or 0) if health else 0.0
    return (node.in_flight / node.slots, node.recent_failures, gpu_busy, -vram_free, node.node_id)
