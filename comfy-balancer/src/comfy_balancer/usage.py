"""Reading what tenants and API keys used, as the task store counted it (``comfy_shared.usage``).

A report covers a range of UTC days, ``since`` to ``until`` inclusive, at most ``MAX_DAYS``
(the usage hashes live ~400 days): by default the current month so far. A caller sees its own
tenant's usage; asking for another tenant is refused whether or not that tenant exists, so
the answer says nothing about other tenants. An admin sees every tenant, or one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from comfy_shared.access import Caller
from comfy_shared.errors import ComfyStackError
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.usage import TOTAL_FIELD, Usage, day_score

MAX_DAYS: Final = 400
DAY_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DAY = re.compile(DAY_PATTERN)


class InvalidUsageRange(ComfyStackError):
    """A day that is no calendar day, ``until`` before ``since``, or too many days."""


class OtherTenant(ComfyStackError):
    def __init__(self) -> None:
        super().__init__("an API key sees only its own tenant's usage and tasks")


@dataclass(frozen=True, slots=True)
class DayRange:
    since: date
    until: date

    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]


def first_of_month(day: date) -> date:
    return day.replace(day=1)


def usage_range(since: str | None, until: str | None, today: date) -> DayRange:
    """The days a report covers: ``until`` defaults to today, ``since`` to the first of
    ``until``'s month. Raises :class:`InvalidUsageRange`."""
    last = _parse_day("until", until) if until is not None else today
    first = _parse_day("since", since) if since is not None else first_of_month(last)
    if last < first:
        raise InvalidUsageRange(f"until ({last}) is before since ({first})")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidUsageRange(f"a report covers at most {MAX_DAYS} days")
    return DayRange(first, last)


def _parse_day(name: str, text: str) -> date:
    try:
        if _DAY.fullmatch(text) is None:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidUsageRange(f"{name} {text!r} is not a day (YYYY-MM-DD)") from None


def tenants_to_report(caller: Caller, tenant: str | None) -> str | None:
    """The one tenant a report (or a task list) is about, or None for every tenant (admins
    only); a key that is not an admin key may name its own tenant only."""
    if caller.sees_every_tenant:
        return tenant
    if tenant is not None and tenant != caller.tenant:
        raise OtherTenant()
    return caller.tenant


# --- the answer -------------------------------------------------------------------------------


class DayUsage(Usage):
    day: date


class TenantUsage(BaseModel):
    tenant: str
    totals: Usage = Field(description="The whole range.")
    days: list[DayUsage] = Field(description="The days of the range with any usage, in order.")


class UsageReport(BaseModel):
    since: date
    until: date
    tenants: list[TenantUsage] = Field(
        description="The tenant asked for (or the caller's), or every tenant with usage "
        "in the range, by name."
    )


# --- reading Redis ----------------------------------------------------------------------------


class UsageBook:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def report(self, days: DayRange, tenant: str | None) -> UsageReport:
        """The usage of ``tenant``, or of every tenant with some in the range."""
        tenants = [tenant] if tenant is not None else await self._tenants_since(days.since)
        found = [await self._tenant_usage(name, days) for name in tenants]
        if tenant is None:
            found = [usage for usage in found if usage.days]
        return UsageReport(since=days.since, until=days.until, tenants=found)

    async def key_gpu_s(self, key_id: str, days: list[date]) -> list[float]:
        """The GPU-seconds an API key's tasks used on each of ``days``, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hget(self._keys.usage_key(key_id, day), TOTAL_FIELD)
            amounts = await pipe.execute()
        return [float(amount) if amount is not None else 0.0 for amount in amounts]

    async def keys_gpu_s(self, key_ids: list[str], days: list[date]) -> dict[str, float]:
        """The GPU-seconds each API key's tasks used over ``days``, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                for day in days:
                    pipe.hget(self._keys.usage_key(key_id, day), TOTAL_FIELD)
            amounts = await pipe.execute()
        per_key = [amounts[n * len(days) : (n + 1) * len(days)] for n in range(len(key_ids))]
        return {
            key_id: sum(float(amount) for amount in mine if amount is not None)
            for key_id, mine in zip(key_ids, per_key, strict=True)
        }

    async def _tenants_since(self, since: date) -> list[str]:
        # Scored by the last day each tenant had a task end: the others have nothing to show.
        names = await self._redis.zrangebyscore(
            self._keys.usage_tenants(), day_score(since), "+inf"
        )
        return sorted(str(name) for name in names)

    async def _tenant_usage(self, tenant: str, days: DayRange) -> TenantUsage:
        every_day = days.days()
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in every_day:
                pipe.hgetall(self._keys.usage_tenant(tenant, day))
            hashes = cast(list[dict[str, str]], await pipe.execute())
        used = [
            DayUsage(day=day, **Usage.from_fields(fields).model_dump())
            for day, fields in zip(every_day, hashes, strict=True)
            if fields
        ]
        totals = Usage()
        for day_usage in used:
            totals = totals.plus(day_usage)
        return TenantUsage(tenant=tenant, totals=totals, days=used)
