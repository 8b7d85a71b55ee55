"""The autoscaler's decision, as a pure function: no Redis, no Docker, no clock.

:func:`decide` looks at the nodes the autoscaler runs (:class:`ManagedNode`, from their
containers and the registry), the fleet's predicted queue wait (:class:`Pressure`, from the
balancer's ETA model) and when it last scaled (:class:`Cooldowns`), and says what to do, each
action with the reason that is logged. Rules, in order:

1. Clean up: a node whose container stopped ``restart_grace_s`` ago (a crashed one is
   restarted by the engine, all of them after an engine restart), whose warm-up failed, or
   that is not live
   ``boot_timeout_s`` after its container started (with nothing in flight) is removed; so is a
   node the autoscaler drained once it reports ``drained`` with nothing in flight.
2. Fewer nodes than ``min_nodes``: start the missing ones at once.
3. Predicted wait over ``target_wait_s`` and fewer than ``max_nodes``: first undrain a node
   being retired (instant capacity), else start nodes, enough that the wait would drop to the
   target at the current pace (``ceil(live * wait / target) - live``, at least one) - unless a
   node is still starting or the scale-up cooldown runs.
4. More than ``max_nodes``: drain the extra ones, slowest first.
5. Wait under the target: a node idle for ``idle_s`` is drained (the slowest first, one per
   scale-down cooldown); it is removed by rule 1 once drained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from comfy_balancer.registry import NodeState


@dataclass(frozen=True, slots=True)
class ScalingLimits:
    min_nodes: int
    max_nodes: int
    target_wait_s: float
    """Predicted queue wait above which the fleet grows."""
    idle_s: float
    """How long a node stays idle before it is drained."""
    up_cooldown_s: float
    """Time after a scale-up before the next one."""
    down_cooldown_s: float
    """Time after a scale-down (a drain) before the next one."""
    boot_timeout_s: float
    """How long a started node may take to become live before it is replaced."""
    restart_grace_s: float = 60.0
    """How long a node's stopped container may take to run again before it is removed."""
    node_prefix: str = "gpu-"
    """A started node's id is this prefix and its GPU id (:meth:`node_id_for`)."""

    def node_id_for(self, gpu: str) -> str:
        """The id of the node that runs on ``gpu``: the same after any restart, so the node
        keeps its learned speed and models."""
        safe = "".join(char if char.isalnum() or char in "_.-" else "-" for char in gpu)
        return f"{self.node_prefix}{safe}"[:64]


@dataclass(frozen=True, slots=True)
class ManagedNode:
    """A node whose containers the autoscaler created, as its containers and the registry
    show it."""

    node_id: str
    gpu: str
    running: bool
    """Its containers are running (False: one of them exited or is gone)."""
    up_s: float
    """Seconds since its containers (last) started."""
    state: NodeState | None
    """What the balancer's registry says (None: it never published health)."""
    down_s: float = 0.0
    """Not running: seconds since it stopped (the engine restarts a crashed container, and
    all of them after its own restart)."""
    in_flight: int = 0
    speed: float = 1.0
    """Reference GPU-seconds it works off per second (the balancer's relative speed)."""
    idle_s: float = 0.0
    """Seconds since it was last seen with work (or not live)."""
    retiring: bool = False
    """The autoscaler drained it to take it down."""

    @property
    def is_live(self) -> bool:
        return self.state in (NodeState.READY, NodeState.BUSY)

    def is_starting(self, boot_timeout_s: float) -> bool:
        """Started less than ``boot_timeout_s`` ago and not live yet."""
        booting = self.running and not self.retiring and self.up_s <= boot_timeout_s
        return booting and not self.is_live and not self.is_drained

    @property
    def is_drained(self) -> bool:
        """Out of rotation by a drain (an admin's or the autoscaler's)."""
        return self.state in (NodeState.DRAINING, NodeState.DRAINED)


@dataclass(frozen=True, slots=True)
class Pressure:
    """What waits, from the balancer's queue and ETA model."""

    pending: int
    wait_s: float | None
    """Predicted wait of the last waiting task (None: no node is live to predict it)."""
    live_nodes: int
    """Live nodes of the whole fleet, the autoscaler's and any others."""
    by_band: dict[str, int] = field(default_factory=dict)

    def over(self, target_s: float) -> bool:
        if self.pending == 0:
            return False
        return self.wait_s is None or self.wait_s > target_s


@dataclass(frozen=True, slots=True)
class Cooldowns:
    up_left_s: float = 0.0
    down_left_s: float = 0.0


class Verb(StrEnum):
    START = "start"
    DRAIN = "drain"
    UNDRAIN = "undrain"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Action:
    verb: Verb
    node_id: str
    gpu: str
    reason: str

    @property
    def scales_up(self) -> bool:
        return self.verb in (Verb.START, Verb.UNDRAIN)


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    reason: str
    """Why the fleet is changed, or why not."""

    @property
    def scaled_up(self) -> bool:
        return any(action.scales_up for action in self.actions)

    @property
    def scaled_down(self) -> bool:
        return any(action.verb is Verb.DRAIN for action in self.actions)


def decide(
    nodes: Sequence[ManagedNode],
    pressure: Pressure,
    limits: ScalingLimits,
    cooldowns: Cooldowns,
    gpus: Sequence[str],
) -> Decision:
    """What to do now (see the module docstring); ``gpus`` is the whole pool, in the order
    they are handed out."""
    cleanup = tuple(_cleanup(nodes, limits))
    removed = {action.node_id for action in cleanup}
    kept = [node for node in nodes if node.node_id not in removed]
    free = [gpu for gpu in gpus if gpu not in {node.gpu for node in nodes}]
    actions, reason = _scale(kept, pressure, limits, cooldowns, free)
    return Decision(cleanup + actions, reason)


def _cleanup(nodes: Sequence[ManagedNode], limits: ScalingLimits) -> list[Action]:
    actions = []
    for node in nodes:
        why = _why_remove(node, limits)
        if why:
            actions.append(Action(Verb.REMOVE, node.node_id, node.gpu, why))
    return actions


def _why_remove(node: ManagedNode, limits: ScalingLimits) -> str | None:
    if not node.running:
        if node.down_s <= limits.restart_grace_s:
            return None  # counted, not replaced: the engine may be restarting it
        return f"its container stopped {node.down_s:.0f} s ago"
    if node.in_flight:
        return None  # never take tasks down with it; the balancer re-queues a dead node's
    if node.retiring and node.state in (NodeState.DRAINED, NodeState.DEAD):
        return "drained and idle"
    if node.state is NodeState.WARM_UP_FAILED:
        return "its warm-up failed"
    if not node.is_live and not node.is_drained and node.up_s > limits.boot_timeout_s:
        return f"not live {node.up_s:.0f} s after start (boot timeout {limits.boot_timeout_s:g} s)"
    return None


def _scale(
    nodes: list[ManagedNode],
    pressure: Pressure,
    limits: ScalingLimits,
    cooldowns: Cooldowns,
    free: list[str],
) -> tuple[tuple[Action, ...], str]:
    active = [node for node in nodes if not node.retiring]
    count = len(active)
    if count < limits.min_nodes:
        why = f"{count} node(s), min {limits.min_nodes}"
        return _start(limits.min_nodes - count, free, limits, why)
    if pressure.over(limits.target_wait_s) and count < limits.max_nodes:
        return _scale_up(nodes, active, pressure, limits, cooldowns, free)
    if count > limits.max_nodes:
        extra = _slowest_first(node for node in active if node.state is not NodeState.DRAINED)
        why = f"{count} node(s), max {limits.max_nodes}"
        return _drain(extra[: count - limits.max_nodes], why), why
    if pressure.over(limits.target_wait_s):
        return (), f"{_wait_text(pressure)}, but at max {limits.max_nodes} node(s)"
    return _scale_down(active, pressure, limits, cooldowns)


def _scale_up(
    nodes: list[ManagedNode],
    active: list[ManagedNode],
    pressure: Pressure,
    limits: ScalingLimits,
    cooldowns: Cooldowns,
    free: list[str],
) -> tuple[tuple[Action, ...], str]:
    why = f"{_wait_text(pressure)} over target {limits.target_wait_s:g} s"
    retiring = [node for node in nodes if node.retiring and node.running]
    if cooldowns.up_left_s > 0:
        return (), f"{why}; scale-up cooldown, {cooldowns.up_left_s:.0f} s left"
    if retiring:
        node = max(retiring, key=lambda node: node.speed)
        return (Action(Verb.UNDRAIN, node.node_id, node.gpu, why),), why
    starting = [node.node_id for node in active if node.is_starting(limits.boot_timeout_s)]
    if starting:
        return (), f"{why}; waiting for {', '.join(starting)} to start"
    wanted = _nodes_for_target(pressure, limits.target_wait_s)
    return _start(min(wanted, limits.max_nodes - len(active)), free, limits, why)


def _nodes_for_target(pressure: Pressure, target_s: float) -> int:
    """Nodes to add so the predicted wait drops to the target at the fleet's current pace
    (the wait shrinks as the live nodes grow); one when nothing is live to measure it."""
    if pressure.wait_s is None or pressure.live_nodes == 0 or target_s <= 0:
        return 1
    needed = math.ceil(pressure.live_nodes * pressure.wait_s / target_s) - pressure.live_nodes
    return max(1, needed)


def _start(
    count: int, free: list[str], limits: ScalingLimits, why: str
) -> tuple[tuple[Action, ...], str]:
    if not free:
        return (), f"{why}; no free GPU in the pool"
    starts = (Action(Verb.START, limits.node_id_for(gpu), gpu, why) for gpu in free[:count])
    return tuple(starts), why


def _scale_down(
    active: list[ManagedNode],
    pressure: Pressure,
    limits: ScalingLimits,
    cooldowns: Cooldowns,
) -> tuple[tuple[Action, ...], str]:
    idle = [
        node
        for node in active
        if node.state is NodeState.READY and not node.in_flight and node.idle_s >= limits.idle_s
    ]
    wait = _wait_text(pressure)
    if not idle or len(active) <= limits.min_nodes:
        return (), f"{wait}; {len(active)} node(s), {len(idle)} idle for {limits.idle_s:g} s"
    if cooldowns.down_left_s > 0:
        return (), f"{wait}; scale-down cooldown, {cooldowns.down_left_s:.0f} s left"
    victim = _slowest_first(idle)[0]
    why = f"{wait}; idle {victim.idle_s:.0f} s, the slowest of {len(idle)} idle node(s)"
    return _drain([victim], why), why


def _drain(nodes: list[ManagedNode], why: str) -> tuple[Action, ...]:
    return tuple(Action(Verb.DRAIN, node.node_id, node.gpu, why) for node in nodes)


def _slowest_first(nodes: Iterable[ManagedNode]) -> list[ManagedNode]:
    """Slowest first; among equals the youngest, which has learned the least."""
    return sorted(nodes, key=lambda node: (node.speed, node.up_s))


def _wait_text(pressure: Pressure) -> str:
    if pressure.pending == 0:
        return "queue empty"
    wait = "unknown (no live node)" if pressure.wait_s is None else f"{pressure.wait_s:.0f} s"
    return f"{pressure.pending} waiting, predicted wait {wait}"
