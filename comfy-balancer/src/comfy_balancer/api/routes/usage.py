"""``/api/v1/usage``: what tenants used of the fleet, per UTC day (see ``comfy_balancer.usage``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from comfy_balancer.api.answers import INVALID_RANGE, TENANT_NOT_ALLOWED
from comfy_balancer.deps import CallerOf, State
from comfy_balancer.usage import DAY_PATTERN, UsageReport, tenants_to_report, usage_range
from comfy_shared.access import NAME_PATTERN
from comfy_shared.api.openapi import INVALID_REQUEST, REDIS_UNAVAILABLE, error_responses
from comfy_shared.clock import utc_now

router = APIRouter(tags=["usage"])

Day = Annotated[str | None, Query(pattern=DAY_PATTERN, description="A UTC day, YYYY-MM-DD.")]


@router.get(
    "/usage",
    response_model=UsageReport,
    responses=error_responses(
        INVALID_REQUEST, INVALID_RANGE, TENANT_NOT_ALLOWED, REDIS_UNAVAILABLE
    ),
)
async def usage_report(
    state: State,
    caller: CallerOf,
    tenant: Annotated[
        str | None,
        Query(pattern=NAME_PATTERN, description="One tenant (default: yours; an admin: all)."),
    ] = None,
    since: Day = None,
    until: Day = None,
) -> UsageReport:
    """Tasks that ended, by final status, and the GPU-seconds they used (in all, by workflow,
    by node), per tenant and UTC day from ``since`` (default: the first of ``until``'s month)
    to ``until`` (default: today), at most 400 days. A task counts on the day it ended. An
    API key sees its own tenant only; an admin key every tenant, or the one named."""
    days = usage_range(since, until, utc_now().date())
    return await state.usage.report(days, tenants_to_report(caller, tenant))
