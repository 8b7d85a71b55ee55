"""GPU-second budgets: when the next day or month begins and which budget is used up (tables,
no Redis), then a key whose tasks used its budget through a real balancer."""

import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest
from redis.asyncio import Redis

from comfy_balancer.auth.keys import ApiKey
from comfy_balancer.budgets import (
    Budgets,
    Spent,
    exhausted_budget,
    seconds_until_next_day,
    seconds_until_next_month,
)
from comfy_balancer.usage import UsageBook
from comfy_shared.access import Caller, KeyLimits, Scope
from comfy_shared.clock import utc_now
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.usage import TOTAL_FIELD
from comfy_testkit import graphs
from comfy_testkit.api import get_task, submit, wait_until_finished
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.metrics import Samples, scrape, value


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "day_s", "month_s"),
    [
        (utc(2026, 3, 9, 0, 0, 0), 86_400, 23 * 86_400),
        (utc(2026, 3, 9, 23, 59, 59), 1, 22 * 86_400 + 1),
        (datetime(2026, 3, 9, 23, 59, 59, 500_000, tzinfo=UTC), 1, 22 * 86_400 + 1),  # rounded up
        (utc(2026, 12, 31, 12, 0, 0), 43_200, 43_200),  # the next month is in the next year
        (utc(2028, 2, 28, 0, 0, 0), 86_400, 2 * 86_400),  # a leap year's February
        (utc(2026, 2, 28, 0, 0, 0), 86_400, 86_400),
    ],
)
def test_retry_after_is_the_time_until_the_next_utc_day_or_month(
    now: datetime, day_s: int, month_s: int
) -> None:
    assert (seconds_until_next_day(now), seconds_until_next_month(now)) == (day_s, month_s)


NOON = utc(2026, 3, 9, 12, 0, 0)


@pytest.mark.parametrize(
    ("per_day", "per_month", "spent", "refused"),
    [
        (None, None, Spent(today=1e6, this_month=1e6), None),
        (10.0, None, Spent(today=9.9, this_month=50), None),
        (10.0, None, Spent(today=10.0, this_month=50), ("day", 43_200)),  # reached = used up
        (None, 60.0, Spent(today=0, this_month=59), None),
        (None, 60.0, Spent(today=0, this_month=61), ("month", 22 * 86_400 + 43_200)),
        (10.0, 60.0, Spent(today=12, this_month=61), ("month", 22 * 86_400 + 43_200)),
        (10.0, 60.0, Spent(today=12, this_month=20), ("day", 43_200)),
    ],
)
def test_a_budget_is_used_up_once_reached_and_the_month_outlasts_the_day(
    per_day: float | None,
    per_month: float | None,
    spent: Spent,
    refused: tuple[str, int] | None,
) -> None:
    limits = KeyLimits(gpu_seconds_per_day=per_day, gpu_seconds_per_month=per_month)
    caller = Caller(tenant="t", scopes=frozenset({Scope.SUBMIT}), key_id="k1", limits=limits)

    exhausted = exhausted_budget(caller, spent, NOON)

    assert (None if exhausted is None else (exhausted.period, exhausted.retry_after_s)) == refused


# --- what the metrics read ------------------------------------------------------------------


async def test_budget_uses_read_the_days_before_today_once_a_day(redis: Redis) -> None:
    keys = RedisKeys(f"budgets-{uuid.uuid4().hex[:8]}")
    now = [utc(2026, 3, 3, 12, 0, 0)]
    budgets = Budgets(UsageBook(redis, keys), clock=lambda: now[0])
    both = api_key("k1", gpu_seconds_per_day=10, gpu_seconds_per_month=100)
    daily = api_key("k2", gpu_seconds_per_day=5)
    unlimited = api_key("k3")

    async def used(key_id: str, day: int, gpu_s: float) -> None:
        await redis.hincrbyfloat(keys.usage_key(key_id, date(2026, 3, day)), TOTAL_FIELD, gpu_s)

    async def uses() -> dict[tuple[str, str], tuple[float, float]]:
        found = await budgets.uses([both, daily, unlimited])
        return {(u.key_id, u.period): (u.budget_gpu_s, u.used_gpu_s) for u in found}

    await used("k1", 1, 20)
    await used("k1", 2, 30)
    await used("k1", 3, 4)
    await used("k2", 3, 1)
    first = await uses()
    await used("k1", 3, 2)  # a task ended today
    await used("k1", 1, 1000)  # never happens (days past are done): shows it is not read again
    second = await uses()
    now[0] = utc(2026, 3, 4, 0, 0, 1)
    next_day = await uses()

    assert first == {("k1", "day"): (10, 4), ("k1", "month"): (100, 54), ("k2", "day"): (5, 1)}
    assert second == {("k1", "day"): (10, 6), ("k1", "month"): (100, 56), ("k2", "day"): (5, 1)}
    assert next_day == {
        ("k1", "day"): (10, 0), ("k1", "month"): (100, 1056), ("k2", "day"): (5, 0),
    }  # fmt: skip


def api_key(key_id: str, **limits: float) -> ApiKey:
    return ApiKey(id=key_id, name=key_id, tenant=f"tenant-{key_id}", scopes=[Scope.SUBMIT],
                  limits=KeyLimits(**limits), created_at=utc_now())  # fmt: skip


# --- through a real balancer ---------------------------------------------------------------------

STEP_TIME_S = 0.05
STEPS = 8
BUDGET_S = 0.1
"""A task runs a few tenths of a second on the emulator: one uses up the budget."""


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"], step_time_s=STEP_TIME_S)


def a_graph() -> dict[str, object]:
    """A new seed each time: ComfyUI would serve the sampler's result from its cache (no GPU
    time at all) for a graph it ran before."""
    return graphs.txt2img(f"budget-{uuid.uuid4().hex[:8]}", steps=STEPS, seed=next(SEEDS))


SEEDS = itertools.count(1000)


async def test_a_key_whose_tasks_used_its_budget_gets_429_until_the_next_day_or_month(
    cluster: Cluster,
) -> None:
    async with KeyClients(cluster) as keys:
        daily = await keys.make("daily", limits={"gpu_seconds_per_day": BUDGET_S})
        monthly = await keys.make(
            "monthly", limits={"gpu_seconds_per_day": 1000, "gpu_seconds_per_month": BUDGET_S}
        )
        unlimited = await keys.make("unlimited")
        # Nothing used yet: every task is accepted, and runs to the end.
        accepted = [await submit(daily, a_graph()) for _ in range(2)]
        accepted.append(await submit(monthly, a_graph()))
        ended = [await wait_until_finished(cluster.api, task["id"]) for task in accepted]
        assert [task["status"] for task in ended] == ["succeeded"] * 3

        refused = {name: await key.post("/api/v1/generate", json={"prompt": a_graph()})
                   for name, key in (("day", daily), ("month", monthly))}  # fmt: skip
        now = utc_now()

        for period, response in refused.items():
            body = response.json()
            assert (response.status_code, body["code"], body["type"]) == (
                429, "budget_exhausted", "validation",
            )  # fmt: skip
            assert f"this {period}" in body["detail"]
        expected = {"day": seconds_until_next_day(now), "month": seconds_until_next_month(now)}
        for period, response in refused.items():
            assert abs(int(response.headers["Retry-After"]) - expected[period]) <= 5
        assert (
            await unlimited.post("/api/v1/generate", json={"workflow": "demo"})
        ).status_code == 202
        # The tasks accepted before the budget ran out took the key past it: reported as used.
        usage = (await daily.get("/api/v1/usage")).json()["tenants"][0]["totals"]
        assert usage["gpu_s"] > 2 * BUDGET_S
        assert (await get_task(daily, accepted[0]["id"]))["status"] == "succeeded"

        # The budgets as metrics: what each key used of each of its budgets, for the alerts.
        _, samples = await scrape(cluster.api)
        budget = budgets_in(samples)
        assert budget == {
            (daily.key["id"], "day"): ("daily", BUDGET_S),
            (monthly.key["id"], "day"): ("monthly", 1000),
            (monthly.key["id"], "month"): ("monthly", BUDGET_S),
        }
        for key, period in budget:
            used = value(samples, "comfy_budget_used_gpu_seconds", key=key, period=period,
                         tenant=budget[key, period][0])  # fmt: skip
            assert used is not None
            assert used > (2 * BUDGET_S if key == daily.key["id"] else BUDGET_S)


def budgets_in(samples: Samples) -> dict[tuple[str, str], tuple[str, float]]:
    """(key, period) -> (tenant, budget) of every ``comfy_budget_gpu_seconds`` sample."""
    found = {}
    for (name, label_set), budget in samples.items():
        if name == "comfy_budget_gpu_seconds":
            labels = dict(label_set)
            found[labels["key"], labels["period"]] = (labels["tenant"], budget)
    return found
