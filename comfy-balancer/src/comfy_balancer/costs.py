"""What a task costs before it runs, in GPU-seconds: what fair sharing charges its tenant
(``TaskQueue``'s tags) and what its ETA adds up.

A graph's sampler steps at the fleet's reference speed: the median step time and overhead of
the nodes that measured theirs (one second a step while none has). The median, not the mean:
one slow or fast card must not make every task look cheaper or dearer. A graph without
sampler steps costs ``MIN_COST_S``, so it still takes a turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any, Final

from comfy_balancer.scheduling import UNMEASURED
from comfy_shared.models import NodeSpeed
from comfy_shared.workload import expected_run_s, sampler_steps

MIN_COST_S: Final = 0.5


def reference_speed(speeds: Sequence[NodeSpeed]) -> NodeSpeed:
    measured = [speed for speed in speeds if speed.tasks_measured > 0]
    if not measured:
        return UNMEASURED
    return NodeSpeed(
        seconds_per_step=median(speed.seconds_per_step for speed in measured),
        overhead_s=median(speed.overhead_s for speed in measured),
        tasks_measured=sum(speed.tasks_measured for speed in measured),
    )


def predicted_gpu_s(graph: Mapping[str, Any], speeds: Sequence[NodeSpeed]) -> float:
    return max(MIN_COST_S, expected_run_s(reference_speed(speeds), sampler_steps(graph)))
