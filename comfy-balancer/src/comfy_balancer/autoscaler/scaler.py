"""The autoscaler's loop: read the fleet, :func:`~comfy_balancer.autoscaler.policy.decide`, act.

The fleet is read with the balancer's own readers: the node registry (state, in flight,
speed), the task queue (depth by band) and the ETA model (``eta.PaceReader``: the predicted
wait of the last waiting task). Drains go through ``NodeRegistry.set_drained``, as
``POST /api/v1/nodes/{id}/drain`` does, and the nodes the autoscaler drained are kept in Redis
(``RedisKeys.autoscaler_retiring``), so a restarted autoscaler still finishes retiring them and
never undrains a node an admin drained. Cooldowns and idle times live in memory: after a
restart, a node counts as idle from when it is first seen again.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Final

from loguru import logger
from redis.asyncio import Redis

from comfy_balancer.autoscaler.containers import NodeContainer, NodeContainers
from comfy_balancer.autoscaler.policy import (
    Action,
    Cooldowns,
    Decision,
    ManagedNode,
    Pressure,
    Verb,
    decide,
)
from comfy_balancer.autoscaler.settings import AutoscalerSettings
from comfy_balancer.costs import MIN_COST_S, reference_speed, relative_speed
from comfy_balancer.eta import PaceReader
from comfy_balancer.registry import NodeRegistry, NodeState, NodeView
from comfy_shared.clock import utc_now
from comfy_shared.redis_client import is_cluster_url
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore

DONE: Final = {
    Verb.START: "node started",
    Verb.DRAIN: "node draining",
    Verb.UNDRAIN: "node undrained",
    Verb.REMOVE: "node removed",
}
"""What each action logs once done."""


class Autoscaler:
    def __init__(
        self,
        settings: AutoscalerSettings,
        redis: Redis,
        containers: NodeContainers,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        keys = RedisKeys(settings.redis_prefix, cluster=is_cluster_url(settings.redis_url))
        store = TaskStore(redis, keys)
        self._settings = settings
        self._redis = redis
        self._retiring_key = keys.autoscaler_retiring(settings.scope)
        self._containers = containers
        self._clock = clock
        self._registry = NodeRegistry(redis, keys, slots=settings.slots_per_node)
        self._queue = TaskQueue(redis, keys, store)
        self._pace = PaceReader(self._registry, self._queue, store)
        self._last_up: float | None = None
        self._last_down: float | None = None
        self._busy_at: dict[str, float] = {}
        self._last_hold = ""

    async def autoscale_once(self) -> Decision:
        """One look at the fleet and what was done about it."""
        containers = await asyncio.to_thread(self._containers.nodes)
        views = {view.node_id: view for view in await self._registry.read()}
        nodes = await self._managed(containers, views)
        pressure = await self._pressure()
        decision = decide(
            nodes, pressure, self._settings.limits, self._cooldowns(), self._settings.gpus
        )
        self._log(decision, nodes, pressure)
        for action in decision.actions:
            await self._act(action)
        now = self._clock()
        if decision.scaled_up:
            self._last_up = now
        if decision.scaled_down:
            self._last_down = now
        return decision

    async def _managed(
        self, containers: Sequence[NodeContainer], views: dict[str, NodeView]
    ) -> list[ManagedNode]:
        retiring = await self._redis.smembers(self._retiring_key)
        live = [view for view in views.values() if view.is_live]
        reference = reference_speed([view.speed for view in live if view.speed])
        now = utc_now()
        nodes = []
        for container in containers:
            view = views.get(container.node_id)
            nodes.append(
                ManagedNode(
                    node_id=container.node_id,
                    gpu=container.gpu,
                    running=container.running,
                    down_s=_seconds_since(container.stopped_at, now),
                    up_s=max(0.0, (now - container.started_at).total_seconds()),
                    state=view.state if view else None,
                    in_flight=view.in_flight if view else 0,
                    speed=relative_speed(view.speed if view else None, reference),
                    idle_s=self._idle_s(container.node_id, view),
                    retiring=container.node_id in retiring,
                )
            )
        self._forget_gone({container.node_id for container in containers})
        return nodes

    def _idle_s(self, node_id: str, view: NodeView | None) -> float:
        """Seconds since the node was last seen with work or not ready."""
        now = self._clock()
        idle = view is not None and view.state is NodeState.READY and view.in_flight == 0
        if not idle or node_id not in self._busy_at:
            self._busy_at[node_id] = now
        return now - self._busy_at[node_id]

    def _forget_gone(self, present: set[str]) -> None:
        for node_id in set(self._busy_at) - present:
            del self._busy_at[node_id]

    async def _pressure(self) -> Pressure:
        stats = await self._queue.stats()
        pace = await self._pace.pace()
        wait_s: float | None = 0.0
        if stats.pending:
            now = utc_now()
            cost_s = pace.mean_queued_cost_s or MIN_COST_S
            eta = pace.eta(stats.pending - 1, cost_s, now)
            wait_s = None if eta is None else (eta.start - now) / timedelta(seconds=1)
        by_band = {str(band): count for band, count in stats.by_band.items()}
        return Pressure(stats.pending, wait_s, pace.nodes, by_band)

    def _cooldowns(self) -> Cooldowns:
        now = self._clock()
        limits = self._settings.limits
        return Cooldowns(
            up_left_s=_left(self._last_up, limits.up_cooldown_s, now),
            down_left_s=_left(self._last_down, limits.down_cooldown_s, now),
        )

    async def _act(self, action: Action) -> None:
        node_id = action.node_id
        if action.verb is Verb.START:
            await self._registry.set_drained(node_id, False)  # an earlier node on this GPU's
            await self._redis.srem(self._retiring_key, node_id)
            await asyncio.to_thread(self._containers.start, node_id, action.gpu)
        elif action.verb is Verb.DRAIN:
            await self._redis.sadd(self._retiring_key, node_id)
            await self._registry.set_drained(node_id, True)
        elif action.verb is Verb.UNDRAIN:
            await self._registry.set_drained(node_id, False)
            await self._redis.srem(self._retiring_key, node_id)
        else:
            await asyncio.to_thread(self._containers.remove, node_id)
            if await self._redis.srem(self._retiring_key, node_id):
                await self._registry.set_drained(node_id, False)
        logger.info(DONE[action.verb], node_id=node_id, gpu=action.gpu, reason=action.reason)

    def _log(self, decision: Decision, nodes: Sequence[ManagedNode], pressure: Pressure) -> None:
        """Every decision that acts at INFO; a hold at INFO only when its kind changes (the
        same hold with other figures at DEBUG), so a steady fleet logs nothing each tick."""
        kind = re.sub(r"[\d.]+", "#", decision.reason) if not decision.actions else ""
        level = "INFO" if decision.actions or kind != self._last_hold else "DEBUG"
        self._last_hold = kind
        logger.log(
            level,
            "autoscale decision",
            reason=decision.reason,
            actions=[f"{a.verb} {a.node_id}" for a in decision.actions],
            nodes={node.node_id: str(node.state) for node in nodes},
            pending=pressure.pending,
            by_band=pressure.by_band,
            wait_s=None if pressure.wait_s is None else round(pressure.wait_s, 1),
        )


def _seconds_since(moment: datetime | None, now: datetime) -> float:
    return 0.0 if moment is None else max(0.0, (now - moment).total_seconds())


def _left(since: float | None, cooldown_s: float, now: float) -> float:
    return 0.0 if since is None else max(0.0, cooldown_s - (now - since))
