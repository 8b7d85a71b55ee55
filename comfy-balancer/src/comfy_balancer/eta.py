"""When a waiting task will start and finish: the work ahead of it over the pace of the fleet.

The fleet is taken as one pool that works off reference GPU-seconds (``costs``) at the sum of
its live nodes' speeds relative to the reference (a node twice as fast as the median counts
2). A task waits for what the nodes still have to do (each placed task's predicted cost, less
what it has run) plus the tasks that start before it (its queue position times the mean cost
of the waiting tasks), and then runs at one average node's pace. Caps and capabilities are not
foreseen; ``bench/fairness.py`` measures how far off the start times are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from comfy_balancer.costs import MIN_COST_S, reference_speed
from comfy_balancer.registry import NodeRegistry
from comfy_shared.api.schemas import TaskEta
from comfy_shared.clock import utc_now
from comfy_shared.models import NodeSpeed, TaskRecord
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore

PACE_MAX_AGE_S: Final = 1.0
"""How old a read of the fleet's pace may be: reading it costs three round trips."""


@dataclass(frozen=True, slots=True)
class FleetPace:
    nodes: int
    rate: float
    """Reference GPU-seconds the live nodes work off per second."""
    busy_s: float
    """Reference GPU-seconds still to run of the tasks placed on nodes."""
    mean_queued_cost_s: float | None
    """Mean predicted cost of a waiting task (None: nothing waits)."""

    def eta(self, position: int, cost_s: float, now: datetime) -> TaskEta | None:
        """None while no node is live (nothing can be foreseen)."""
        if self.rate <= 0:
            return None
        ahead_s = position * (self.mean_queued_cost_s or cost_s)
        start = now + timedelta(seconds=(self.busy_s + ahead_s) / self.rate)
        return TaskEta(
            start=start, finish=start + timedelta(seconds=cost_s * self.nodes / self.rate)
        )


def relative_speed(speed: NodeSpeed | None, reference: NodeSpeed) -> float:
    """How many reference GPU-seconds the node does per second (1 when either is unmeasured)."""
    if speed is None or speed.tasks_measured == 0 or speed.seconds_per_step <= 0:
        return 1.0
    if reference.tasks_measured == 0 or reference.seconds_per_step <= 0:
        return 1.0
    return reference.seconds_per_step / speed.seconds_per_step


class PaceReader:
    """The fleet's pace, read at most once a second however many tasks are looked at."""

    def __init__(self, registry: NodeRegistry, queue: TaskQueue, store: TaskStore) -> None:
        self._registry = registry
        self._queue = queue
        self._store = store
        self._last: tuple[float, FleetPace] | None = None

    async def pace(self) -> FleetPace:
        if self._last is not None and time.monotonic() - self._last[0] <= PACE_MAX_AGE_S:
            return self._last[1]
        pace = await self._read()
        self._last = (time.monotonic(), pace)
        return pace

    async def expected_times(self, record: TaskRecord, position: int | None) -> TaskEta | None:
        """The ETA of a waiting task (None for any other)."""
        if position is None:
            return None
        pace = await self.pace()
        return pace.eta(position, record.predicted_gpu_s or MIN_COST_S, utc_now())

    async def _read(self) -> FleetPace:
        live = [node for node in await self._registry.recent(PACE_MAX_AGE_S) if node.is_live]
        reference = reference_speed([node.speed for node in live if node.speed])
        speeds = {node.node_id: relative_speed(node.speed, reference) for node in live}
        stats = await self._queue.stats()
        return FleetPace(
            nodes=len(live),
            rate=sum(speeds.values()),
            busy_s=await self._busy_s(speeds),
            mean_queued_cost_s=stats.queued_gpu_s / stats.pending if stats.pending else None,
        )

    async def _busy_s(self, speeds: dict[str, float]) -> float:
        """What the placed tasks still have to run: a task's predicted cost less what it has
        run, in reference seconds (a node twice as fast does two a second)."""
        placed = await self._queue.dispatched_on(list(speeds))
        node_of = {task_id: node for node, tasks in placed.items() for task_id in tasks}
        records = await self._store.find_many(list(node_of)) if node_of else {}
        now = utc_now()
        busy_s = 0.0
        for task_id, record in records.items():
            if record is None or record.status.is_terminal:
                continue
            ran_s = (now - record.started_at).total_seconds() if record.started_at else 0.0
            done_s = ran_s * speeds[node_of[task_id]]
            busy_s += max(0.0, (record.predicted_gpu_s or MIN_COST_S) - done_s)
        return busy_s
