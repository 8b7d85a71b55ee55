"""Who is calling, and what they may do: scopes, tenants and per-key limits.

Every request to the public API is made by a :class:`Caller`: the holder of an API key (the
balancer checks keys, see ``comfy_balancer.auth``), or, where no key is asked for (a service
behind its internal token, a balancer started with authentication off), a caller that may do
everything. A caller belongs to one tenant; it sees only that tenant's tasks unless it has the
``admin`` scope. Limits come with the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from comfy_shared.errors import TaskNotFound
from comfy_shared.json_types import json_integer, json_number
from comfy_shared.models import Band, TaskRecord
from comfy_shared.task_queue import MAX_ABS_PRIORITY
from comfy_shared.task_store import TaskStore

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Key names and tenants: they are Redis key parts and appear in logs and metrics labels."""
DEFAULT_TENANT: Final = "default"
"""The tenant of tasks submitted where no key is asked for."""


class Scope(StrEnum):
    SUBMIT = "submit"
    """Submit and cancel tasks."""
    READ = "read"
    """Read tasks, their events, logs and outputs; the nodes, the queue, the workflows."""
    ADMIN = "admin"
    """Everything, every tenant's tasks, and the API keys."""


class KeyLimits(BaseModel):
    """What one key may take of the fleet; an unset limit does not apply."""

    model_config = ConfigDict(extra="forbid")

    max_running: int | None = Field(
        default=None, ge=1, le=100_000, description="Tasks placed on nodes at once; more wait."
    )
    max_queued: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Tasks waiting at once; more get 429."
    )
    submits_per_minute: int | None = Field(
        default=None, ge=1, le=100_000, description="Submits per minute; more get 429."
    )
    max_priority: int | None = Field(
        default=None,
        ge=-MAX_ABS_PRIORITY,
        le=MAX_ABS_PRIORITY,
        description="Highest priority it may ask for; above it: 403.",
    )
    gpu_seconds_per_day: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        description="GPU-seconds its tasks may use per UTC day; once used up, submits get 429.",
    )
    gpu_seconds_per_month: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        description="GPU-seconds its tasks may use per UTC month; once used up, submits get 429.",
    )

    _integers = field_validator(
        "max_running", "max_queued", "submits_per_minute", "max_priority", mode="before"
    )(json_integer)
    _numbers = field_validator("gpu_seconds_per_day", "gpu_seconds_per_month", mode="before")(
        json_number
    )


class KeyShare(BaseModel):
    """How a key's tasks share the fleet with other tenants' (README "Fair sharing")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    band: Band = Field(default=Band.STANDARD, description="The band of its tasks by default.")
    max_band: Band | None = Field(
        default=None,
        description="The highest band a request may ask for (default: `band`); above: 403.",
    )
    weight: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Its tenant's share of a band, relative to others' (2: twice the GPU-time).",
    )
    group: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="A group of tenants whose running tasks are capped together "
        "(`PUT /api/v1/groups/{group}`), e.g. a class.",
    )

    _numbers = field_validator("weight", mode="before")(json_number)

    def allows(self, band: Band) -> bool:
        return band.rank >= (self.max_band or self.band).rank


ANY_BAND: Final = KeyShare(max_band=Band.INTERACTIVE)


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    scopes: frozenset[Scope]
    key_id: str | None = None
    """The API key, when one was shown (None where no key is asked for)."""
    limits: KeyLimits = field(default_factory=KeyLimits)
    share: KeyShare = ANY_BAND
    webhook_url: str | None = None
    """The key's default webhook, for tasks submitted without one."""
    signs_webhooks: bool = False
    """The key has its own webhook signing secret (else the deployment's is used, if any)."""

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    @property
    def sees_every_tenant(self) -> bool:
        return Scope.ADMIN in self.scopes

    def sees(self, task: TaskRecord) -> bool:
        return self.sees_every_tenant or task.tenant == self.tenant


TRUSTED: Final = Caller(tenant=DEFAULT_TENANT, scopes=frozenset(Scope))
"""The caller where no key is asked for: may do everything."""


async def visible_task(store: TaskStore, caller: Caller, task_id: str) -> TaskRecord:
    """The task, if the caller may see it; another tenant's task is "not found" (saying it
    exists would already say too much)."""
    record = await store.get(task_id)
    if not caller.sees(record):
        raise TaskNotFound(task_id)
    return record
