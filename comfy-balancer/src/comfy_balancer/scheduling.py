"""Which node gets a task: pure policy, no I/O and no clock, tested as a table.

Only live nodes (alive, ComfyUI reachable) that are capable (every node class and model file
of the graph) and big enough (the most VRAM the graph's shape took, once known) are
candidates. ``earliest-finish`` may choose a node whose slots are all taken: the task then
stays queued until that node frees one, because any node free now would finish it later. The
other strategies choose among nodes with a free slot.

What a task costs on a node (``expected_s``): a model switch, if the models it loads will not
be resident when it starts (following the node's own queue: ``NodeView.upcoming``), plus its
run time there. Both are learned by each node's service (``NodeProfile``); what one node has
not learned is taken from the others (a run time scaled by their step times, a load time as
their mean); sampler steps at the node's speed are the last resort.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from statistics import fmean
from typing import Final, Protocol

from comfy_balancer.registry import ModelRoom, NodeView
from comfy_balancer.settings import StrategyName
from comfy_balancer.work import Work
from comfy_shared.models import NodeSpeed
from comfy_shared.workload import expected_run_s, graph_models

UNMEASURED = NodeSpeed(seconds_per_step=1.0, overhead_s=0.0, tasks_measured=0)
"""Assumed for every node while none has measured its speed: all alike, so earliest-finish
balances the nodes by sampler steps."""

DEFAULT_AFFINITY_WINDOW_S: Final = 20.0
SWITCH_WEIGHT: Final = 2.0
"""What a switch weighs against finish times: this task's delay, and the GPU time it takes
(and the models it evicts) from work that comes later."""
SWITCH_WEIGHT_WITH_WARM_WORK: Final = 4.0
"""What it weighs on a node that has queued tasks it could run without one: its GPU time is
taken from them now."""
PRESSURE_DELAY_S: Final = 1.5
"""``model-pressure``: how long a task waits for a node holding its model before another
node loads it (SwarmUI's figure)."""
PRESSURE_PER_TASK_S: Final = 10.0
"""``model-pressure``: one more waiting task weighs as much as 10 s of waiting (SwarmUI's)."""


@dataclass(frozen=True, slots=True)
class Demand:
    """What is known of a task before it runs, and what the fleet learned of its kind."""

    steps: int = 0
    shape: str = ""
    models: tuple[str, ...] = ()
    vram_bytes: int | None = None
    """The most VRAM the shape's weights took on any node (None: never measured)."""
    step_units: float | None = None
    """The shape's learned run time on the nodes that ran it, in their seconds per step: a
    node that has not run it takes ``step_units * its seconds_per_step``."""
    load_s: Mapping[str, float] = field(default_factory=dict)
    """The fleet's mean learned load time of each of ``models``."""
    typical_load_s: float = 0.0
    """The fleet's mean learned load time of any model: for a model no node has loaded."""
    waited_s: float = 0.0
    most_wanted: bool = False
    """``model-pressure``: its models are the waiting queue's most wanted (count and age)."""


class FleetKnowledge:
    """What the fleet's nodes learned, read once per dispatch cycle to describe its tasks
    (a template's many tasks share their shape and models: each is looked up once)."""

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self._learned = [
            (node.speed, node.health.profile) for node in nodes if node.health is not None
        ]
        self._loaders = fleet_loaders(nodes)
        loads = [seconds for _, profile in self._learned for seconds in profile.load_s.values()]
        self._typical_load_s = fmean(loads) if loads else 0.0
        self._shapes: dict[str, tuple[float | None, int | None]] = {}
        self._loads: dict[str, float | None] = {}

    def describe(self, work: Work, *, waited_s: float = 0.0) -> Demand:
        step_units, vram_bytes = self._shape(work.shape)
        models = graph_models(work.graph, self._loaders)
        return Demand(
            steps=work.steps,
            shape=work.shape,
            models=models,
            vram_bytes=vram_bytes,
            step_units=step_units,
            load_s={
                model: seconds for model in models if (seconds := self._load_s(model)) is not None
            },
            typical_load_s=self._typical_load_s,
            waited_s=waited_s,
        )

    def _shape(self, shape: str) -> tuple[float | None, int | None]:
        if shape not in self._shapes:
            units = [
                profile.shape_run_s[shape] / speed.seconds_per_step
                for speed, profile in self._learned
                if shape in profile.shape_run_s and speed and speed.seconds_per_step > 0
            ]
            vram = [
                p.shape_vram_bytes[shape] for _, p in self._learned if shape in p.shape_vram_bytes
            ]
            self._shapes[shape] = (fmean(units) if units else None, max(vram, default=None))
        return self._shapes[shape]

    def _load_s(self, model: str) -> float | None:
        if model not in self._loads:
            seconds = [p.load_s[model] for _, p in self._learned if model in p.load_s]
            self._loads[model] = fmean(seconds) if seconds else None
        return self._loads[model]


def fleet_loaders(nodes: Sequence[NodeView]) -> dict[str, dict[str, list[str]]]:
    """Every loader input (class -> input) any node's ComfyUI declares."""
    loaders: dict[str, dict[str, list[str]]] = {}
    for node in nodes:
        for class_type, inputs in node.capabilities.models.items():
            known = loaders.setdefault(class_type, {})
            for input_name in inputs:
                known.setdefault(input_name, [])
    return loaders


def run_s(node: NodeView, demand: Demand) -> float:
    """The task's run time on ``node`` with its models resident."""
    learned = node.health.profile.shape_run_s.get(demand.shape) if node.health else None
    if learned is not None:
        return learned
    speed = node.speed or UNMEASURED
    if demand.step_units is not None and speed.seconds_per_step > 0:
        return demand.step_units * speed.seconds_per_step
    return expected_run_s(speed, demand.steps)


def switch_s(node: NodeView, demand: Demand, *, warm_counts: bool = True) -> float:
    """Seconds ``node`` spends loading the task's models that will not be resident when it
    starts (all of them when ``warm_counts`` is false)."""
    learned = node.health.profile.load_s if node.health else {}
    return sum(
        learned.get(model, demand.load_s.get(model, demand.typical_load_s))
        for model in demand.models
        if not (warm_counts and model in node.upcoming)
    )


def expected_s(node: NodeView, demand: Demand) -> float:
    return switch_s(node, demand) + run_s(node, demand)


def is_warm(node: NodeView, demand: Demand) -> bool:
    return all(model in node.upcoming for model in demand.models)


class Affinity(StrEnum):
    """How a placement stands to the models of its node (``comfy_dispatch_total{affinity}``)."""

    HIT = "hit"
    """Every model of the task will be resident when it starts (or it loads none)."""
    SWITCH = "switch"
    """The node will hold other models: the task evicts or adds to them."""
    COLD = "cold"
    """The node will hold no model: the task loads its own from nothing."""


def affinity(node: NodeView, demand: Demand) -> Affinity:
    """What placing the task on ``node`` means for its models (following the node's queue)."""
    if is_warm(node, demand):
        return Affinity.HIT
    return Affinity.SWITCH if node.upcoming else Affinity.COLD


def with_task(node: NodeView, demand: Demand, *, placed: bool) -> NodeView:
    """``node`` once the task is placed on it (``placed``) or waits for it: more work ahead,
    and its models the most recently used."""
    return replace(
        node,
        in_flight=node.in_flight + 1 if placed else node.in_flight,
        backlog_s=node.backlog_s + expected_s(node, demand),
        upcoming=load_models(node.upcoming, demand.models, node.model_room),
    )


def load_models(
    resident: tuple[str, ...], models: Sequence[str], room: ModelRoom
) -> tuple[str, ...]:
    """The resident models (least recently used first) after a run that used ``models``:
    they move to the end, and the oldest go beyond the room."""
    return room.keep(tuple(model for model in resident if model not in models) + tuple(models))


def with_warm_waiting(node: NodeView, queued: Sequence[Demand]) -> NodeView:
    """``node`` with the number of ``queued`` tasks it could run without a switch."""
    loaded = set(node.upcoming)
    return replace(
        node, warm_waiting=sum(bool(d.models) and set(d.models) <= loaded for d in queued)
    )


def fits(node: NodeView, demand: Demand) -> bool:
    total = node.health.comfyui.vram_total_bytes if node.health else None
    return demand.vram_bytes is None or total is None or demand.vram_bytes <= total


class Strategy(Protocol):
    name: str

    def choose(self, demand: Demand, candidates: Sequence[NodeView]) -> NodeView | None:
        """``candidates``: live, capable nodes, some maybe without a free slot."""
        ...


class EarliestFinish:
    """The node where the task would finish first: the node's placed work still to run
    (``backlog_s``), a model switch if its models will not be resident by then, and the
    task's run time there. A switch weighs more than its seconds (``SWITCH_WEIGHT``): besides
    this task's delay it takes GPU time, and evicts models, from the work behind it; four
    times on a node that has queued tasks it could run without it. So several tasks for a
    cold model cost one load: the first one's node has the model for the next ones
    (``with_task``), which wait for it unless its queue outweighs a second load; and a node
    keeps to its models while they have work, but helps with another once they have none. On
    a tie a node with a free slot wins, then a warm one, then the least loaded.

    On a mixed fleet this keeps long jobs off slow nodes once the fast ones are nearly free,
    which is what decides the makespan when the queue runs dry. Waiting for a warm node is
    bounded: a node that starts the task later than ``affinity_window_s`` from now gets no
    credit for its models.

    ``model_aware=False`` ignores models (the strategy as it was before models were known)."""

    def __init__(
        self, *, model_aware: bool = True, affinity_window_s: float = DEFAULT_AFFINITY_WINDOW_S
    ) -> None:
        self.name = "earliest-finish" if model_aware else "earliest-finish-by-speed"
        self._model_aware = model_aware
        self._window_s = affinity_window_s

    def choose(self, demand: Demand, candidates: Sequence[NodeView]) -> NodeView | None:
        def score(node: NodeView) -> float:
            if not self._model_aware:
                return node.backlog_s + run_s(node, demand)
            waits = not node.free_slots and node.backlog_s > self._window_s
            switch = switch_s(node, demand, warm_counts=not waits)
            weight = SWITCH_WEIGHT_WITH_WARM_WORK if node.warm_waiting else SWITCH_WEIGHT
            return node.backlog_s + weight * switch + run_s(node, demand)

        if not candidates:
            return None
        return min(
            candidates,
            key=lambda node: (
                score(node),
                not node.free_slots,
                self._model_aware and not is_warm(node, demand),
                _load_key(node),
            ),
        )


class ModelPressure:
    """SwarmUI's rule: an idle node that has the task's models; otherwise the queue's most
    wanted models (waiting tasks x 10 s + the oldest's wait) are loaded on a free node, once
    the task has waited ``PRESSURE_DELAY_S`` for a node that has them, or at once when none
    has. A task that loads no model goes to the least loaded free node."""

    name = "model-pressure"

    def choose(self, demand: Demand, candidates: Sequence[NodeView]) -> NodeView | None:
        free = _with_free_slot(candidates)
        if not free:
            return None
        if not demand.models:
            return min(free, key=_load_key)
        warm = [node for node in free if node.in_flight == 0 and is_warm(node, demand)]
        if warm:
            return min(warm, key=_load_key)
        held = any(is_warm(node, demand) for node in candidates)
        if demand.most_wanted and (demand.waited_s >= PRESSURE_DELAY_S or not held):
            cold = [node for node in free if not is_warm(node, demand)] or free
            return min(cold, key=_load_key)
        return None


class LeastLoaded:
    """Fewest tasks in flight per slot first; then fewer recent failures, a less busy GPU,
    more free VRAM; the node id breaks ties so the choice is deterministic."""

    name = "least-loaded"

    def choose(self, demand: Demand, candidates: Sequence[NodeView]) -> NodeView | None:
        free = _with_free_slot(candidates)
        return min(free, key=_load_key) if free else None


class RoundRobin:
    """Each choice goes to the next node in id order (the turn counter is per process: the
    rotation is a preference, not a guarantee, when several balancers run)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, demand: Demand, candidates: Sequence[NodeView]) -> NodeView | None:
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

    def choose(self, demand: Demand, candidates: Sequence[NodeView]) -> NodeView | None:
        free = _with_free_slot(candidates)
        return self._rng.choice(free) if free else None


def make_strategy(
    name: StrategyName, *, affinity_window_s: float = DEFAULT_AFFINITY_WINDOW_S
) -> Strategy:
    strategies: dict[str, Callable[[], Strategy]] = {
        "earliest-finish": lambda: EarliestFinish(affinity_window_s=affinity_window_s),
        "earliest-finish-by-speed": lambda: EarliestFinish(model_aware=False),
        "model-pressure": ModelPressure,
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
    demand: Demand = Demand(),
    avoid: frozenset[str] = frozenset(),
) -> NodeView | None:
    """The node for a task; it may have no free slot (see the module's docstring).
    ``avoid``: nodes an earlier attempt ended on; chosen only when no other node will do."""
    candidates = [node for node in nodes if node.is_live and fits(node, demand) and can_run(node)]
    preferred = [node for node in candidates if node.node_id not in avoid]
    chosen = strategy.choose(demand, preferred) if preferred else None
    return chosen or strategy.choose(demand, candidates)


def most_wanted(demands: Sequence[Demand]) -> tuple[str, ...] | None:
    """The models with the most pressure among waiting tasks that load some: waiting tasks
    x ``PRESSURE_PER_TASK_S`` + the longest wait."""
    pressure: dict[tuple[str, ...], tuple[int, float]] = {}
    for demand in demands:
        if demand.models:
            count, oldest = pressure.get(demand.models, (0, 0.0))
            pressure[demand.models] = (count + 1, max(oldest, demand.waited_s))
    if not pressure:
        return None
    return max(
        pressure, key=lambda models: pressure[models][0] * PRESSURE_PER_TASK_S + pressure[models][1]
    )


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
