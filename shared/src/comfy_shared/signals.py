"""Wake-up signals between processes over Redis pub/sub.

A signal only says "look again" (a task was queued, a slot was freed, a node appeared): the
facts themselves are always in Redis keys, so a lost signal costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from comfy_shared.redis_keys import RedisKeys

NODE_CHANGED = "node-changed"
"""Sent by a service when it appears or its ComfyUI comes or goes (payload: node id)."""


class Signals:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def publish(self, name: str, payload: str = "") -> int:
        """Send a signal; returns how many subscribers got it."""
        return await self._redis.publish(self._keys.signal(name), payload)

    @asynccontextmanager
    async def subscribe(self, *names: str) -> AsyncIterator[Subscription]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*(self._keys.signal(name) for name in names))
        try:
            yield Subscription(pubsub, self._keys)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


class Subscription:
    def __init__(self, pubsub: PubSub, keys: RedisKeys) -> None:
        self._pubsub = pubsub
        self._channel_prefix = keys.signal("")

    async def next(self, timeout_s: float) -> tuple[str, str] | None:
        """The next (signal name, payload), or None when ``timeout_s`` passes without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            message = await self._pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "message":
                name = str(message["channel"]).removeprefix(self._channel_prefix)
                return name, str(message["data"])
        return None

    async def arrived(self, limit: int) -> list[tuple[str, str]]:
        """Signals already received, up to ``limit``, without waiting for more (a burst is
        then handled as one)."""
        got: list[tuple[str, str]] = []
        while len(got) < limit:
            message = await self._pubsub.get_message(timeout=0.0)
            if message is None:
                break
            if message["type"] == "message":
                name = str(message["channel"]).removeprefix(self._channel_prefix)
                got.append((name, str(message["data"])))
        return got
