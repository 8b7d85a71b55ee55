"""A balancer that cannot reach Redis still answers its scrape, and says so."""

from __future__ import annotations

import httpx
import pytest

from comfy_testkit.metrics import scrape, value
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.restartable_redis import RestartableRedis
from comfy_testkit.waiting import wait_for_condition


@pytest.fixture
def redis_url(restartable_redis: RestartableRedis) -> str:
    return restartable_redis.url


async def test_redis_down_is_a_gauge_not_a_failed_scrape(
    start_balancer: BalancerFactory, restartable_redis: RestartableRedis
) -> None:
    balancer = start_balancer()
    async with httpx.AsyncClient(
        base_url=balancer.url, headers=balancer.auth_headers, timeout=15
    ) as api:
        _, samples = await scrape(api)
        assert value(samples, "comfy_redis_up") == 1
        assert value(samples, "comfy_queue_depth", priority="standard") == 0

        restartable_redis.crash()
        _, samples = await scrape(api)
        assert value(samples, "comfy_redis_up") == 0
        assert value(samples, "comfy_queue_depth", priority="standard") is None  # not made up
        assert value(samples, "comfy_stream_clients", kind="sse") == 0  # its own, still there

        restartable_redis.start_again()

        async def reached_again() -> bool:
            return value((await scrape(api))[1], "comfy_redis_up") == 1

        await wait_for_condition(reached_again, timeout_s=15, what="redis reached again")
