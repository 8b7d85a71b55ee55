"""Learns how fast this node's ComfyUI works, from the events of the tasks it runs.

The step time is the interval between two progress events of the same node (a sampler reports
one per step); the overhead is the rest of a task's run time: encoding, decoding, saving. Both
are moving averages, so a node that slows down (thermal limits) is seen within a few tasks.
The balancer uses them to place each task where it would finish first
(``comfy_shared.workload``).

The overhead is learned only from a hot run: one that succeeded, reported sampler steps and
loaded no model. A cold run's extra time is the cost of switching models, which the node's
profile learns per model file (``comfy_service.profile``); a graph without steps (an upscale,
a model-free image edit) says nothing about a step-based cost, its time is learned per
workflow shape there too. Counting either as overhead would make the balancer shun a node that
merely ran one slow graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from comfy_shared.models import NodeSpeed

STEP_WEIGHT = 0.1
"""Weight of the newest step interval (a task gives dozens)."""
OVERHEAD_WEIGHT = 0.25
"""Weight of the newest task's overhead (one per task)."""


@dataclass
class _Run:
    started: float
    node: str | None = None
    value: int = 0
    at: float = 0.0
    steps_by_node: dict[str, int] = field(default_factory=dict)


class SpeedMeter:
    def __init__(
        self, initial: NodeSpeed | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._step_s = initial.seconds_per_step if initial else None
        self._overhead_s = initial.overhead_s if initial else None
        self._tasks = initial.tasks_measured if initial else 0
        self._runs: dict[str, _Run] = {}

    def started(self, task_id: str) -> None:
        self._runs[task_id] = _Run(started=self._clock())

    def progressed(self, task_id: str, node: str | None, value: int) -> None:
        run = self._runs.get(task_id)
        if run is None or node is None:
            return
        now = self._clock()
        if node == run.node and value > run.value:
            interval = (now - run.at) / (value - run.value)
            self._step_s = _blend(self._step_s, interval, STEP_WEIGHT)
        run.node, run.value, run.at = node, value, now
        run.steps_by_node[node] = max(value, run.steps_by_node.get(node, 0))

    def ended(self, task_id: str, *, hot: bool) -> None:
        """The run is over; ``hot``: it succeeded and loaded no model."""
        run = self._runs.pop(task_id, None)
        if run is None:
            return  # started before this process did: its start time is unknown
        steps = sum(run.steps_by_node.values())
        if not hot or steps == 0:
            return
        overhead = max(0.0, self._clock() - run.started - steps * (self._step_s or 0.0))
        self._overhead_s = _blend(self._overhead_s, overhead, OVERHEAD_WEIGHT)
        self._tasks += 1

    def forget_runs(self) -> None:
        """ComfyUI reconnected: the runs in progress may have ended unseen."""
        self._runs.clear()

    def expected_s(self, steps: int) -> float:
        """A hot run of ``steps`` sampler steps here, from what is known so far (an unknown
        part counts as 0: before any hot run there is no overhead to add)."""
        return (self._overhead_s or 0.0) + steps * (self._step_s or 0.0)

    def current(self) -> NodeSpeed | None:
        if self._overhead_s is None:
            return None
        return NodeSpeed(
            seconds_per_step=self._step_s or 0.0,
            overhead_s=self._overhead_s,
            tasks_measured=self._tasks,
        )


def _blend(average: float | None, sample: float, weight: float) -> float:
    return sample if average is None else average + weight * (sample - average)
