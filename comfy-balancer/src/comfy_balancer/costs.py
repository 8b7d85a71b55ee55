"""What a task costs before it runs, in GPU-seconds at the fleet's reference speed: what
fair sharing charges its tenant (``TaskQueue``'s tags) and what its ETA adds up.

The reference speed is the median step time and overhead of the nodes that measured theirs
(one second a step while none has): the median, not the mean, so one slow or fast card does
not make every task look cheaper or dearer. A graph whose shape (``workload.graph_shape``:
node classes, numbers, model files) has run before costs what it took, learned from its
successful runs (each run's time times its node's speed relative to the reference, so a run
on a fast card counts what it would have taken on the reference one); other graphs cost
their sampler steps at the reference speed. Any graph costs at least ``MIN_COST_S``, so it
still takes a turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any, Final, cast

from redis.asyncio import Redis

from comfy_balancer.scheduling import UNMEASURED
from comfy_shared.lua import LuaScript
from comfy_shared.models import NodeSpeed
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.workload import expected_run_s, graph_shape, sampler_steps

MIN_COST_S: Final = 0.5
MAX_SHAPES: Final = 10_000
"""Shapes learned at most: past it, new shapes keep their step-based cost (a client that
varies its numbers cannot grow the table without end)."""
LEARNING_RATE: Final = 0.2
"""Weight of a new run once a shape has five: the mean of the runs so far before that."""

# A running mean of a shape's cost, then an exponential one (recent runs count more: a
# node's driver or a model may change). Value: "<GPU-seconds>|<runs>".
_LEARN: Final = LuaScript(
    keys=("costs",),
    args=("shape", "gpu_s", "rate", "max_shapes"),
    body="""
local raw = redis.call('HGET', KEY.costs, ARG.shape)
local mean, runs = 0, 0
if raw then
  local m, r = string.match(raw, '^(.-)|(.*)$')
  mean, runs = tonumber(m), tonumber(r)
elseif redis.call('HLEN', KEY.costs) >= tonumber(ARG.max_shapes) then
  return 0
end
runs = runs + 1
mean = mean + math.max(tonumber(ARG.rate), 1 / runs) * (tonumber(ARG.gpu_s) - mean)
redis.call('HSET', KEY.costs, ARG.shape, string.format('%.6f|%d', mean, runs))
return 1
""",
)


def reference_speed(speeds: Sequence[NodeSpeed]) -> NodeSpeed:
    measured = [speed for speed in speeds if speed.tasks_measured > 0]
    if not measured:
        return UNMEASURED
    return NodeSpeed(
        seconds_per_step=median(speed.seconds_per_step for speed in measured),
        overhead_s=median(speed.overhead_s for speed in measured),
        tasks_measured=sum(speed.tasks_measured for speed in measured),
    )


def relative_speed(speed: NodeSpeed | None, reference: NodeSpeed) -> float:
    """How many reference GPU-seconds the node does per second (1 when either is unmeasured)."""
    if speed is None or speed.tasks_measured == 0 or speed.seconds_per_step <= 0:
        return 1.0
    if reference.tasks_measured == 0 or reference.seconds_per_step <= 0:
        return 1.0
    return reference.seconds_per_step / speed.seconds_per_step


def step_cost_s(graph: Mapping[str, Any], speeds: Sequence[NodeSpeed]) -> float:
    """The cost of a graph no run has taught: its sampler steps at the reference speed."""
    return max(MIN_COST_S, expected_run_s(reference_speed(speeds), sampler_steps(graph)))


class CostModel:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._key = keys.costs_by_shape()
        self._learn = _LEARN.register(redis)

    async def predict(self, graph: Mapping[str, Any], speeds: Sequence[NodeSpeed]) -> float:
        learned = cast("str | None", await self._redis.hget(self._key, graph_shape(graph)))
        if learned is None:
            return step_cost_s(graph, speeds)
        return max(MIN_COST_S, float(learned.partition("|")[0]))

    async def learn(
        self, graph: Mapping[str, Any], run_s: float, node: NodeSpeed | None, fleet: NodeSpeed
    ) -> None:
        """A successful run of ``graph`` took ``run_s`` on a node of speed ``node``."""
        await self._learn(
            keys={"costs": self._key},
            args={
                "shape": graph_shape(graph),
                "gpu_s": repr(run_s * relative_speed(node, fleet)),
                "rate": repr(LEARNING_RATE),
                "max_shapes": MAX_SHAPES,
            },
        )
