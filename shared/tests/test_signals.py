import asyncio

from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_shared.signals import Signals


async def test_subscriber_receives_a_published_signal(redis: Redis) -> None:
    signals = Signals(redis, RedisKeys("test"))
    async with signals.subscribe("task-queued", "slot-freed") as subscription:
        assert await signals.publish("slot-freed", "node-a") == 1
        assert await subscription.next(timeout_s=5) == ("slot-freed", "node-a")


async def test_next_returns_none_after_the_timeout(redis: Redis) -> None:
    signals = Signals(redis, RedisKeys("test"))
    async with signals.subscribe("quiet") as subscription:
        started = asyncio.get_running_loop().time()
        assert await subscription.next(timeout_s=0.05) is None
        assert asyncio.get_running_loop().time() - started >= 0.05


async def test_a_burst_is_read_at_once_up_to_a_limit_without_waiting(redis: Redis) -> None:
    signals = Signals(redis, RedisKeys("test"))
    async with signals.subscribe("task-queued") as subscription:
        for task_id in ("t1", "t2", "t3", "t4"):
            await signals.publish("task-queued", task_id)
        first = await subscription.next(timeout_s=5)

        async def rest_arrived() -> list[tuple[str, str]]:
            # The burst reaches the subscriber's socket in one go, or nearly: wait for it.
            got: list[tuple[str, str]] = []
            while len(got) < 3:
                got += await subscription.arrived(limit=2 if not got else 3 - len(got))
                await asyncio.sleep(0.01)
            return got

        rest = await asyncio.wait_for(rest_arrived(), timeout=5)
        started = asyncio.get_running_loop().time()
        assert await subscription.arrived(limit=10) == []
        assert asyncio.get_running_loop().time() - started < 0.05  # did not wait

    assert [first, *rest] == [("task-queued", t) for t in ("t1", "t2", "t3", "t4")]
