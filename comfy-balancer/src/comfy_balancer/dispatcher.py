"""Late binding: a task leaves the queue only when a capable node has a free slot.

The loop wakes on signals (a task was queued, a task ended, a node changed) and on a short
tick, so it reacts within milliseconds and still notices what no signal announces (a health
key that expired). Each cycle first sweeps the placements (``sweep``: frees slots of ended
tasks, takes tasks back from lost nodes, re-sends placements a crash interrupted), then
places tasks (here), and hands each placement to the sender (``sending``).

Placement is exactly-once: claiming is atomic in Redis (see ``TaskQueue.claim``), and a
re-sent placement carries the same attempt number, which the service runs at most once.
Several balancer replicas can run this loop against one Redis.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from loguru import logger

from comfy_balancer.costs import CostModel
from comfy_balancer.metrics import BalancerMetrics
from comfy_balancer.registry import NodeRegistry, NodeView
from comfy_balancer.scheduling import (
    Affinity,
    Demand,
    FleetKnowledge,
    Strategy,
    affinity,
    expected_s,
    load_models,
    most_wanted,
    pick_node,
    with_assumed_speeds,
    with_task,
    with_warm_waiting,
)
from comfy_balancer.sending import Sender
from comfy_balancer.sweep import Sweeper, SweepReport, SweepRules
from comfy_balancer.work import Work, WorkCache
from comfy_shared.capabilities import missing_capabilities
from comfy_shared.clock import now_ms, utc_now
from comfy_shared.errors import TaskNotFound
from comfy_shared.lifecycle import Placed, Refused
from comfy_shared.loops import LoopHandle
from comfy_shared.models import Capabilities, RetryPolicy
from comfy_shared.signals import NODE_CHANGED, Signals
from comfy_shared.task_queue import TASK_QUEUED, TaskQueue
from comfy_shared.task_store import TASK_ENDED, TaskStore

MIN_CYCLE_INTERVAL_S: Final = 0.005
"""Cycles woken by signals start at least this far apart (an idle dispatcher reacts at once)."""


class Dispatcher:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        registry: NodeRegistry,
        sender: Sender,
        signals: Signals,
        strategy: Strategy,
        policy: RetryPolicy,
        lookahead: int,
        rules: SweepRules,
        costs: CostModel,
        metrics: BalancerMetrics,
        prefetch_lead_s: float = math.inf,
    ) -> None:
        self._store = store
        self._queue = queue
        self._registry = registry
        self._sender = sender
        self._signals = signals
        self._strategy = strategy
        self._policy = policy
        self._lookahead = lookahead
        self._prefetch_lead_s = prefetch_lead_s
        self._next_opening_s = math.inf
        self._metrics = metrics
        self._work = WorkCache(store)
        self.sweeper = Sweeper(
            store=store, queue=queue, sender=sender, work=self._work, rules=rules, costs=costs,
            metrics=metrics,
        )  # fmt: skip
        self._watching_since = 0.0

    async def run(self, handle: LoopHandle, tick_s: float) -> None:
        """Cycle on every signal, and at least every ``tick_s`` seconds. Raises when Redis
        fails (its supervisor starts it again): a new subscription, then a full cycle at once,
        so signals lost while it was down do not matter."""
        loop = asyncio.get_running_loop()
        self._watching_since = loop.time()
        async with self._signals.subscribe(TASK_QUEUED, TASK_ENDED, NODE_CHANGED) as wakeups:
            while True:
                started = loop.time()
                await self.cycle()
                handle.working()
                # A held prefetch slot opens at a predicted moment that no signal announces.
                wait_s = min(tick_s, self._next_opening_s)
                if await wakeups.next(timeout_s=wait_s) is not None:
                    # Under load signals come in a stream (two per task): one cycle a few ms
                    # later serves all of them, instead of a full cycle for each.
                    await asyncio.sleep(started + MIN_CYCLE_INTERVAL_S - loop.time())
                    while await wakeups.next(timeout_s=0.001) is not None:
                        pass

    async def cycle(self) -> int:
        nodes = await self._registry.read()
        report = await self.sweeper.sweep_once(nodes, self._gone(nodes), now_ms())
        return await self.dispatch_once(await self._with_backlog(nodes, report))

    async def dispatch_once(self, nodes: list[NodeView]) -> int:
        """Place as many queued tasks as there are free capable slots; returns how many."""
        # Updated as this cycle decides, so each choice sees the ones before it: the tasks
        # placed, and the tasks left waiting for a busy node (that node is busier for the
        # tasks behind them).
        views = {
            node.node_id: node
            if not self._sender.is_paused(node.node_id)
            else replace(node, in_flight=node.slots)  # overloaded a moment ago: no new work
            for node in nodes
        }
        self._next_opening_s = _next_opening_s(views)
        if not _any_free(views):
            return 0
        head = await self._queue.head(self._lookahead)
        await self._work.learn(head, queued=True)
        demands = self._demands(head, list(views.values()))
        queued = [demand for _, demand in demands.values()]
        wanted = most_wanted(queued)
        views = {node_id: with_warm_waiting(node, queued) for node_id, node in views.items()}
        placed = 0
        for task_id, (work, demand) in demands.items():
            if not _any_free(views):
                break
            demand = replace(demand, most_wanted=bool(demand.models) and demand.models == wanted)
            node = pick_node(
                list(views.values()),
                _can_run(work.graph),
                self._strategy,
                demand=demand,
                avoid=self._work.tried(task_id),
            )
            if node is None:
                continue  # no node can run it now: later tasks may still fit elsewhere
            if not node.free_slots:
                views[node.node_id] = with_task(node, demand, placed=False)
                continue
            claimed = await self._queue.claim(task_id, node.node_id, node.slots)
            # -2: its API key runs as many tasks as it may; it waits, the ones behind go on.
            if claimed == -1:  # another replica filled it
                views[node.node_id] = replace(node, in_flight=node.slots)
            elif claimed == 1:
                views[node.node_id] = with_task(node, demand, placed=True)
                placed += 1
                self._work.placed(task_id)
                await self._place(task_id, work.graph, node, affinity(node, demand))
        self._next_opening_s = _next_opening_s(views)
        return placed

    async def stop(self) -> None:
        await self._sender.stop()

    def _gone(self, nodes: list[NodeView]) -> set[str]:
        """Nodes whose health is missing, once this balancer has watched for longer than their
        health lives: right after Redis (or this balancer) came back, a node that has not
        written its health yet is not dead."""
        watched_s = asyncio.get_running_loop().time() - self._watching_since
        return {
            node.node_id
            for node in nodes
            if node.health is None and watched_s >= self._registry.ttl_of(node.node_id)
        }

    async def _place(
        self, task_id: str, graph: dict[str, Any], node: NodeView, models: Affinity
    ) -> None:
        try:
            record = await self._store.apply(task_id, Placed(node.node_id, self._policy))
        except (Refused, TaskNotFound):
            await self._queue.release(task_id, node.node_id)  # cancelled while we claimed it
            return
        self._metrics.count_dispatched(node.node_id, models)
        logger.info(
            "task dispatched", task_id=task_id, to_node=node.node_id, attempt=record.attempts
        )
        self._sender.start(record, graph, node)

    def _demands(
        self, task_ids: list[str], nodes: list[NodeView]
    ) -> dict[str, tuple[Work, Demand]]:
        """What each task needs and what the fleet learned of it (tasks deleted meanwhile
        are left out)."""
        fleet = FleetKnowledge(nodes)
        now = utc_now()
        demands = {}
        for task_id in task_ids:
            work = self._work.get(task_id)
            if work is None:
                continue
            queued_at = self._work.queued_at(task_id)
            waited_s = (now - queued_at).total_seconds() if queued_at else 0.0
            demands[task_id] = (work, fleet.describe(work, waited_s=waited_s))
        return demands

    async def _with_backlog(self, nodes: list[NodeView], report: SweepReport) -> list[NodeView]:
        """The nodes as the sweep left them: tasks in flight, the expected seconds until that
        work is done (each task's model switch and run time, a running one counting what is
        left), the models resident by then, and the prefetch lead that holds a busy node's
        next slot until its work nearly ends."""
        placed = report.still_placed
        await self._work.learn([record.id for records in placed.values() for record in records])
        demands = self._demands([r.id for records in placed.values() for r in records], nodes)
        now = utc_now()
        views = []
        for node in with_assumed_speeds(nodes):
            view = replace(node, backlog_s=0.0, prefetch_lead_s=self._prefetch_lead_s)
            # Running first, then in the order they were queued: ComfyUI's own order.
            records = sorted(
                placed.get(node.node_id, []),
                key=lambda r: (r.started_at is None, r.started_at or r.created_at),
            )
            for record in records:
                demand = demands[record.id][1] if record.id in demands else Demand()
                cost_s = expected_s(view, demand)
                if record.started_at is not None:
                    cost_s -= (now - record.started_at).total_seconds()
                view = replace(
                    view,
                    backlog_s=view.backlog_s + max(0.0, cost_s),
                    upcoming=load_models(view.upcoming, demand.models, view.model_room),
                )
            views.append(replace(view, in_flight=len(records)))
        return views


def _next_opening_s(views: dict[str, NodeView]) -> float:
    """Seconds until the first held prefetch slot opens (infinite: none is held)."""
    waits = [node.prefetch_opens_in_s for node in views.values() if node.is_live]
    return min((wait_s for wait_s in waits if wait_s > 0), default=math.inf)


def _any_free(views: dict[str, NodeView]) -> bool:
    return any(node.free_slots for node in views.values())


def _can_run(graph: dict[str, Any]) -> Callable[[NodeView], bool]:
    """Whether a node can run ``graph``, checked once per capabilities object: the registry
    gives nodes with the same capabilities one object, so a task costs one check per kind of
    node instead of one per node (the most costly part of a placement on a large fleet)."""
    verdicts: dict[int, tuple[Capabilities, bool]] = {}  # holding each object keeps its id

    def can_run(node: NodeView) -> bool:
        capabilities = node.capabilities
        known = verdicts.get(id(capabilities))
        if known is None:
            known = verdicts[id(capabilities)] = (
                capabilities,
                not missing_capabilities(graph, capabilities),
            )
        return known[1]

    return can_run
