"""``/api/v1/groups``: caps on the tasks a group of tenants runs at once (``admin`` only).

A key joins a group through its ``share.group``; the group's cap holds across every balancer
replica (the queue counts the group's running tasks in Redis), on top of each key's own
``max_running``: a class of 30 students, each 1 at a time, the class at most 4 at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from comfy_balancer.deps import State, require_admin
from comfy_shared.access import NAME_PATTERN
from comfy_shared.api.openapi import (
    INVALID_REQUEST,
    MALFORMED_JSON,
    REDIS_UNAVAILABLE,
    error_responses,
)
from comfy_shared.json_types import json_integer

router = APIRouter(prefix="/groups", tags=["keys"], dependencies=[Depends(require_admin)])

GroupName = Annotated[str, Path(pattern=NAME_PATTERN, description="The group's name.")]


class GroupLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_running: int | None = Field(
        ge=1, le=100_000, description="Tasks its tenants run at once, together; null: no cap."
    )

    _integers = field_validator("max_running", mode="before")(json_integer)


@router.get("", response_model=dict[str, GroupLimit], responses=error_responses(REDIS_UNAVAILABLE))
async def list_groups(state: State) -> dict[str, GroupLimit]:
    """Every group with a cap."""
    limits = await state.queue.group_limits()
    return {group: GroupLimit(max_running=most) for group, most in sorted(limits.items())}


@router.put(
    "/{group}",
    response_model=GroupLimit,
    responses=error_responses(MALFORMED_JSON, INVALID_REQUEST, REDIS_UNAVAILABLE),
)
async def set_group_limit(group: GroupName, limit: GroupLimit, state: State) -> GroupLimit:
    """Set (or with null, lift) the group's cap; it applies to the next placement."""
    await state.queue.set_group_limit(group, limit.max_running)
    return limit
