"""The unfinished tasks this node owns.

The set of ids lives in Redis (``RedisKeys.node_active``) so a restarted service picks its tasks
up again. The clocks the watchdog reads (last sign of life, time at the head of the queue) are
soft state in memory: after a restart they start again from zero, which only delays a timeout.
"""

from __future__ import annotations

import time
from typing import cast

from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys


class OwnedTasks:
    def __init__(self, redis: Redis, keys: RedisKeys, node_id: str) -> None:
        self._redis = redis
        self._key = keys.node_active(node_id)
        self._last_activity: dict[str, float] = {}
        self._head_since: dict[str, float] = {}
        self._known: set[str] = set()

    def expect(self, task_id: str) -> None:
        """Note a task about to be sent to ComfyUI, so its first events are recognised at
        once (they can arrive before the submit call returns)."""
        self._known.add(task_id)

    def unexpect(self, task_id: str) -> None:
        """The submission failed: nothing will run."""
        self._known.discard(task_id)

    def is_known(self, task_id: str) -> bool:
        """In-memory answer for the event hot path; a miss is checked against Redis."""
        return task_id in self._known

    async def add(self, task_id: str) -> None:
        await self._redis.sadd(self._key, task_id)
        self._known.add(task_id)
        self.touch(task_id)

    async def remove(self, task_id: str) -> None:
        await self._redis.srem(self._key, task_id)
        self._known.discard(task_id)
        self._last_activity.pop(task_id, None)
        self._head_since.pop(task_id, None)

    async def ids(self) -> set[str]:
        ids = cast(set[str], await self._redis.smembers(self._key))
        self._known |= ids
        return ids

    async def count(self) -> int:
        return await self._redis.scard(self._key)

    def touch(self, task_id: str) -> None:
        """Record a sign of life (an event from ComfyUI about this task)."""
        self._last_activity[task_id] = time.monotonic()

    def idle_for_s(self, task_id: str) -> float:
        now = time.monotonic()
        return now - self._last_activity.setdefault(task_id, now)

    def at_head(self, task_id: str, is_at_head: bool) -> float:
        """Seconds the task has been waiting at the head of ComfyUI's queue (0 if it is not)."""
        if not is_at_head:
            self._head_since.pop(task_id, None)
            return 0.0
        now = time.monotonic()
        return now - self._head_since.setdefault(task_id, now)
