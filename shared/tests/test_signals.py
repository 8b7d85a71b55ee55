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
