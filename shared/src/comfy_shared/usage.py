"""What tenants and API keys used of the fleet: tasks by final status and GPU-seconds.

A task is counted once, when it ends: the store's write of its terminal status (a
compare-and-set, see :mod:`comfy_shared.task_store`) also adds the task to the usage hashes of
its tenant and its API key for the UTC day it ended, in the same Lua script. A replayed report
or a retried write finds the task ended and changes nothing, so nothing is counted twice.

GPU-seconds of a task: the time each of its attempts ran in ComfyUI, from the attempt's start
(``Attempt.started_at``) to its end, charged to the attempt's node; an attempt that never
started (it waited in a queue, or was turned away) costs nothing. A record written before
attempts kept their start is charged its last run (``started_at`` to ``finished_at``). All of
it goes to the day the task ended, even a run that crossed midnight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from pydantic import BaseModel, Field

from comfy_shared.lua import LuaScript
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TERMINAL_STATES, TaskStatus

USAGE_TTL_S: Final = 400 * 24 * 3600
"""How long a day's usage is kept: a year back, and a bit, is always there."""
RAW_GRAPH: Final = "graph"
"""The workflow name of a task sent as a graph rather than a template."""
GPU_S_DECIMALS: Final = 3

TOTAL_FIELD: Final = "gpu_s:total"
_TASKS, _WORKFLOW, _NODE = "tasks:", "gpu_s:workflow:", "gpu_s:node:"


def tasks_field(status: TaskStatus) -> str:
    return f"{_TASKS}{status.value}"


def gpu_s_by_node(record: TaskRecord) -> dict[str, float]:
    """The seconds each node ran the task's graph, over all its attempts."""
    used: dict[str, float] = {}
    for attempt in record.attempt_log:
        if attempt.started_at is not None and attempt.ended_at is not None:
            seconds = _seconds(attempt.started_at, attempt.ended_at)
            used[attempt.node_id] = used.get(attempt.node_id, 0.0) + seconds
    if not used and record.started_at is not None and record.finished_at is not None:
        node = record.node_id or (record.attempt_log[-1].node_id if record.attempt_log else "")
        used[node or "unknown"] = _seconds(record.started_at, record.finished_at)
    return {node: round(seconds, GPU_S_DECIMALS) for node, seconds in used.items()}


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


@dataclass(frozen=True, slots=True)
class UsageCharge:
    """What one ended task adds to its tenant's and its key's usage of one day."""

    tenant: str
    key_id: str | None
    day: date
    tenant_fields: dict[str, float]
    key_fields: dict[str, float]


def charge_of(record: TaskRecord) -> UsageCharge:
    """The usage of an ended task (``record`` in a terminal status)."""
    by_node = gpu_s_by_node(record)
    total = round(sum(by_node.values()), GPU_S_DECIMALS)
    counted = {tasks_field(record.status): 1.0, TOTAL_FIELD: total}
    runs = {f"{_NODE}{node}": seconds for node, seconds in by_node.items()}
    if total > 0:
        runs[f"{_WORKFLOW}{record.workflow or RAW_GRAPH}"] = total
    ended = record.finished_at or record.updated_at
    return UsageCharge(
        tenant=record.tenant,
        key_id=record.key_id,
        day=ended.date(),
        tenant_fields=counted | runs,
        key_fields=counted,
    )


# --- the write: part of the store's script for a terminal write ----------------------------

COUNT_USAGE: Final = LuaScript(
    keys=("tenant_usage", "tenants_with_usage"),
    args=("tenant", "usage_day", "tenant_usage", "usage_ttl_s"),
    body="""
for field, amount in pairs(cjson.decode(ARG.tenant_usage)) do
  redis.call('HINCRBYFLOAT', KEY.tenant_usage, field, amount)
end
redis.call('EXPIRE', KEY.tenant_usage, ARG.usage_ttl_s)
redis.call('ZADD', KEY.tenants_with_usage, 'GT', ARG.usage_day, ARG.tenant)
""",
)
"""Add an ended task to its tenant's usage of the day."""

COUNT_KEY_USAGE: Final = LuaScript(
    keys=("key_usage",),
    args=("key_usage", "usage_ttl_s"),
    body="""
for field, amount in pairs(cjson.decode(ARG.key_usage)) do
  redis.call('HINCRBYFLOAT', KEY.key_usage, field, amount)
end
redis.call('EXPIRE', KEY.key_usage, ARG.usage_ttl_s)
""",
)
"""The same for the API key that submitted it (a task submitted without a key has none)."""


def count_usage_arguments(
    keys: RedisKeys, charge: UsageCharge
) -> tuple[dict[str, str], dict[str, str | int]]:
    """Keys and arguments of :data:`COUNT_USAGE` (and :data:`COUNT_KEY_USAGE` with a key)."""
    names = {
        "tenant_usage": keys.usage_tenant(charge.tenant, charge.day),
        "tenants_with_usage": keys.usage_tenants(),
    }
    args: dict[str, str | int] = {
        "tenant": charge.tenant,
        "usage_day": day_score(charge.day),
        "tenant_usage": _amounts(charge.tenant_fields),
        "usage_ttl_s": USAGE_TTL_S,
    }
    if charge.key_id is not None:
        names["key_usage"] = keys.usage_key(charge.key_id, charge.day)
        args["key_usage"] = _amounts(charge.key_fields)
    return names, args


def day_score(day: date) -> int:
    """A day as the number yyyymmdd: days compare as their scores do."""
    return day.year * 10_000 + day.month * 100 + day.day


def _amounts(fields: dict[str, float]) -> str:
    # Strings, not JSON numbers: Lua would hand Redis a number as "%.14g" (1e-05 and the like).
    return json.dumps({field: f"{amount:.{GPU_S_DECIMALS}f}" for field, amount in fields.items()})


# --- the read ----------------------------------------------------------------------------------


class TaskCounts(BaseModel):
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class Usage(BaseModel):
    """Tasks that ended, by final status, and the GPU-seconds they used."""

    tasks: TaskCounts = Field(default_factory=TaskCounts)
    gpu_s: float = Field(default=0.0, description="GPU-seconds in all.")
    gpu_s_by_workflow: dict[str, float] = Field(
        default_factory=dict,
        description=f'By template name ("{RAW_GRAPH}": tasks sent as a graph).',
    )
    gpu_s_by_node: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Usage:
        """A usage hash as Redis holds it (fields it does not know are left out)."""
        usage = cls()
        for field, raw in fields.items():
            usage._add_field(field, float(raw))
        return usage.rounded()

    def plus(self, other: Usage) -> Usage:
        return Usage(
            tasks=TaskCounts(
                **{s: getattr(self.tasks, s) + getattr(other.tasks, s) for s in _STATUSES}
            ),
            gpu_s=self.gpu_s + other.gpu_s,
            gpu_s_by_workflow=_sum(self.gpu_s_by_workflow, other.gpu_s_by_workflow),
            gpu_s_by_node=_sum(self.gpu_s_by_node, other.gpu_s_by_node),
        ).rounded()

    def rounded(self) -> Usage:
        """Sums of floats drift in their last digits: show what was counted."""

        def tidy(values: dict[str, float]) -> dict[str, float]:
            return {name: round(value, GPU_S_DECIMALS) for name, value in sorted(values.items())}

        return self.model_copy(
            update={
                "gpu_s": round(self.gpu_s, GPU_S_DECIMALS),
                "gpu_s_by_workflow": tidy(self.gpu_s_by_workflow),
                "gpu_s_by_node": tidy(self.gpu_s_by_node),
            }
        )

    def _add_field(self, field: str, amount: float) -> None:
        if field.startswith(_TASKS) and field[len(_TASKS) :] in _STATUSES:
            status = field[len(_TASKS) :]
            setattr(self.tasks, status, getattr(self.tasks, status) + int(amount))
        elif field == TOTAL_FIELD:
            self.gpu_s += amount
        elif field.startswith(_WORKFLOW):
            self.gpu_s_by_workflow[field[len(_WORKFLOW) :]] = amount
        elif field.startswith(_NODE):
            self.gpu_s_by_node[field[len(_NODE) :]] = amount


_STATUSES: Final = frozenset(status.value for status in TERMINAL_STATES)


def _sum(first: dict[str, float], second: dict[str, float]) -> dict[str, float]:
    return {name: first.get(name, 0.0) + second.get(name, 0.0) for name in first | second}
