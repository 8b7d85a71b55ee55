"""GPU-second budgets of API keys (``gpu_seconds_per_day``, ``gpu_seconds_per_month``).

At submit, a key whose tasks used its budget of the current UTC day (or month) is refused
with 429 ``budget_exhausted`` and ``Retry-After`` the seconds until the next day (or month)
begins. What a key used is what the task store counted when its tasks ended, so tasks
already queued or running when the budget runs out still run, and may take the key past its
budget by what they use: the budget decides whether new work is accepted, it never stops
work that was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from comfy_balancer.auth.keys import ApiKey
from comfy_balancer.usage import UsageBook, first_of_month
from comfy_shared.access import Caller
from comfy_shared.clock import utc_now
from comfy_shared.errors import ComfyStackError

Period = Literal["day", "month"]


class BudgetExhausted(ComfyStackError):
    def __init__(self, period: Period, limit: float, used: float, retry_after_s: int) -> None:
        super().__init__(
            f"this API key used {used:g} of its {limit:g} GPU-seconds this {period}; "
            f"the next {period} starts in {retry_after_s}s"
        )
        self.period = period
        self.retry_after_s = retry_after_s


def seconds_until_next_day(now: datetime) -> int:
    """Whole seconds (at least 1) until the next UTC midnight."""
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return max(1, math.ceil((midnight - now).total_seconds()))


def seconds_until_next_month(now: datetime) -> int:
    """Whole seconds (at least 1) until the first of the next UTC month."""
    first = first_of_month(now.date())
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    start = datetime.combine(following, datetime.min.time(), now.tzinfo)
    return max(1, math.ceil((start - now).total_seconds()))


@dataclass(frozen=True, slots=True)
class Spent:
    today: float
    this_month: float


def exhausted_budget(caller: Caller, spent: Spent, now: datetime) -> BudgetExhausted | None:
    """Which budget the key has used up, if any; the month's when both are (it lasts longer)."""
    limits = caller.limits
    month, day = limits.gpu_seconds_per_month, limits.gpu_seconds_per_day
    if month is not None and spent.this_month >= month:
        return BudgetExhausted("month", month, spent.this_month, seconds_until_next_month(now))
    if day is not None and spent.today >= day:
        return BudgetExhausted("day", day, spent.today, seconds_until_next_day(now))
    return None


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """What a key with a budget used of it this period (``comfy_budget_*`` metrics)."""

    key_id: str
    tenant: str
    period: Period
    budget_gpu_s: float
    used_gpu_s: float


class Budgets:
    def __init__(self, book: UsageBook, clock: Callable[[], datetime] = utc_now) -> None:
        self._book = book
        self._clock = clock
        self._month_before_day: date | None = None
        self._month_before_by_key: dict[str, float] = {}

    async def uses(self, keys: Sequence[ApiKey]) -> list[BudgetUse]:
        """Each budget of ``keys`` with what was used of it, for the metrics: one HGET per
        key (today's usage) in one round trip, plus the month's earlier days of keys not read
        yet today (they no longer change: a task counts on the day it ends)."""
        today = self._clock().date()
        budgeted = [key for key in keys if _limit(key, "day") or _limit(key, "month")]
        monthly = [key for key in budgeted if _limit(key, "month") is not None]
        used_today = await self._book.keys_gpu_s([key.id for key in budgeted], [today])
        before_today = await self._month_before(today, monthly)
        uses: list[BudgetUse] = []
        for key in budgeted:
            if (per_day := _limit(key, "day")) is not None:
                uses.append(BudgetUse(key.id, key.tenant, "day", per_day, used_today[key.id]))
            if (per_month := _limit(key, "month")) is not None:
                month = before_today[key.id] + used_today[key.id]
                uses.append(BudgetUse(key.id, key.tenant, "month", per_month, month))
        return uses

    async def _month_before(self, today: date, keys: Sequence[ApiKey]) -> dict[str, float]:
        """GPU-seconds each key used this month before ``today``, kept until the day ends."""
        if self._month_before_day != today:
            self._month_before_day, self._month_before_by_key = today, {}
        missing = [key.id for key in keys if key.id not in self._month_before_by_key]
        if missing:
            days = [first_of_month(today) + timedelta(days=n) for n in range(today.day - 1)]
            read = await self._book.keys_gpu_s(missing, days) if days else {}
            self._month_before_by_key |= {key_id: read.get(key_id, 0.0) for key_id in missing}
        return self._month_before_by_key

    async def check(self, caller: Caller) -> None:
        """Raises :class:`BudgetExhausted` when the caller's key used up a budget."""
        limits = caller.limits
        if caller.key_id is None or (
            limits.gpu_seconds_per_day is None and limits.gpu_seconds_per_month is None
        ):
            return
        now = self._clock()
        refused = exhausted_budget(caller, await self._spent(caller.key_id, caller, now), now)
        if refused is not None:
            raise refused

    async def _spent(self, key_id: str, caller: Caller, now: datetime) -> Spent:
        today = now.date()
        days = [today]
        if caller.limits.gpu_seconds_per_month is not None:
            days = [first_of_month(today) + timedelta(days=n) for n in range(today.day)]
        amounts = await self._book.key_gpu_s(key_id, days)  # today is the last
        return Spent(today=amounts[-1], this_month=sum(amounts))


def _limit(key: ApiKey, period: Period) -> float | None:
    limits = key.limits
    return limits.gpu_seconds_per_day if period == "day" else limits.gpu_seconds_per_month
