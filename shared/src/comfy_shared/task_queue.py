"""The cluster's durable pending queue and the slots each node uses, in Redis.

Order: a sorted set scored ``-priority * 1e12 + arrival sequence``, so a higher priority runs
first and tasks of one priority run in arrival order. Every move is one Lua script, so the
races that matter have exactly one winner:

- submit: the task record and its queue entry are written together (a crash cannot leave a
  task that is stored but never queued);
- claim: a task leaves the queue for a node only if it is still queued (a cancel or another
  balancer replica may have taken it) and only if the node has a free slot;
- requeue: a task goes back to its old place (its original score), e.g. after its node died.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import CREATE_SCRIPT, TaskStore

PRIORITY_SPAN: Final = 10**12
"""Arrival sequences stay below this, so priorities never overlap (scores stay exact doubles
for |priority| <= 1000)."""
MAX_ABS_PRIORITY: Final = 1000
TASK_QUEUED: Final = "task-queued"
"""Signal sent when a task enters (or re-enters) the pending queue."""

# Lua: the priority a score encodes (as the field name in the priorities hash; "+ 0" and %d
# turn Lua's -0 into "0").
_PRIORITY_LUA: Final = """
local function priority_of(score)
  return string.format('%d', -math.floor(tonumber(score) / 1e12) + 0)
end
"""

# Lua: take a task out of the pending queue.
_DEQUEUE_LUA: Final = (
    _PRIORITY_LUA
    + """
local function dequeue(pending, since, priorities, task_id)
  local score = redis.call('ZSCORE', pending, task_id)
  if not score then return false end
  redis.call('ZREM', pending, task_id)
  redis.call('ZREM', since, task_id)
  local priority = priority_of(score)
  if redis.call('HINCRBY', priorities, priority, -1) <= 0 then
    redis.call('HDEL', priorities, priority)
  end
  return true
end
"""
)

# CREATE_SCRIPT's KEYS[1..4]/ARGV[1..8], then KEYS: 5 pending, 6 since, 7 priorities, 8 seq;
# ARGV: 9 priority, 10 queued ms, 11 signal channel, 12 most pending tasks (0: no limit).
# Returns the stored record if the id is taken, -1 if the queue is full, else 1 + tasks ahead
# of the new one.
_SUBMIT_SCRIPT: Final = (
    """
local limit = tonumber(ARGV[12])
if limit > 0 and redis.call('EXISTS', KEYS[1]) == 0
    and redis.call('ZCARD', KEYS[5]) >= limit then
  return -1
end
"""
    + CREATE_SCRIPT
    + """
local seq = redis.call('INCR', KEYS[8])
local score = -tonumber(ARGV[9]) * 1e12 + seq
redis.call('HSET', KEYS[1], 'queue_score', score, 'queued_ms', ARGV[10])
redis.call('ZADD', KEYS[5], score, ARGV[6])
redis.call('ZADD', KEYS[6], ARGV[10], ARGV[6])
redis.call('HINCRBY', KEYS[7], ARGV[9], 1)
redis.call('PUBLISH', ARGV[11], ARGV[6])
return redis.call('ZRANK', KEYS[5], ARGV[6]) + 1
"""
)

# KEYS: pending, since, priorities, node dispatched. ARGV: task id, slots, now ms.
# Returns 1 claimed, 0 no longer queued, -1 the node has no free slot.
_CLAIM_SCRIPT: Final = (
    _DEQUEUE_LUA
    + """
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[2]) then return -1 end
if not dequeue(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""
)

# KEYS: pending, since, priorities. ARGV: task id. Returns 1 if it was queued.
_REMOVE_SCRIPT: Final = (
    _DEQUEUE_LUA + "return dequeue(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) and 1 or 0"
)

# KEYS: pending, since, priorities, node dispatched, task hash. ARGV: task id, channel.
# Returns 1 if queued again, 0 if the task has no queue place (not a balancer task, expired).
_REQUEUE_SCRIPT: Final = (
    _PRIORITY_LUA
    + """
redis.call('ZREM', KEYS[4], ARGV[1])
local score = redis.call('HGET', KEYS[5], 'queue_score')
local since = redis.call('HGET', KEYS[5], 'queued_ms')
if not score then return 0 end
if redis.call('ZADD', KEYS[1], 'NX', score, ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], since, ARGV[1])
  redis.call('HINCRBY', KEYS[3], priority_of(score), 1)
end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""
)


class QueueAtCapacity(Exception):
    """The pending queue holds the most tasks allowed."""


@dataclass(frozen=True, slots=True)
class Submitted:
    task: TaskRecord
    created: bool
    position: int | None
    """Tasks ahead of a task this call queued; None for an existing task (not looked up)."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    by_priority: dict[int, int]
    oldest_queued_ms: int | None


class TaskQueue:
    def __init__(self, redis: Redis, keys: RedisKeys, store: TaskStore) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._submit = redis.register_script(_SUBMIT_SCRIPT)
        self._claim = redis.register_script(_CLAIM_SCRIPT)
        self._remove = redis.register_script(_REMOVE_SCRIPT)
        self._requeue = redis.register_script(_REQUEUE_SCRIPT)

    @property
    def _queue_keys(self) -> list[str]:
        return [self._keys.pending_queue(), self._keys.queue_since(), self._keys.queue_priorities()]

    async def submit(
        self, record: TaskRecord, prompt: dict[str, Any], *, max_pending: int = 0
    ) -> Submitted:
        """Store the task and queue it, atomically, in one round trip; a taken id returns the
        existing task. Raises QueueAtCapacity if ``max_pending`` (0: no limit) tasks wait."""
        if abs(record.priority) > MAX_ABS_PRIORITY:
            raise ValueError(f"priority must be within +-{MAX_ABS_PRIORITY}")
        keys, args = self._store.create_arguments(record, prompt)
        result = await self._submit(
            keys=[*keys, *self._queue_keys, self._keys.queue_seq()],
            args=[*args, record.priority, now_ms(), self._keys.signal(TASK_QUEUED), max_pending],
        )
        if isinstance(result, str):
            return Submitted(TaskRecord.model_validate_json(result), created=False, position=None)
        if result == -1:
            raise QueueAtCapacity(max_pending)
        return Submitted(record, created=True, position=int(result) - 1)

    async def claim(self, task_id: str, node_id: str, slots: int) -> int:
        """Move a queued task onto a node: 1 done, 0 no longer queued, -1 node full."""
        result = await self._claim(
            keys=[*self._queue_keys, self._keys.node_dispatched(node_id)],
            args=[task_id, slots, now_ms()],
        )
        return int(result)

    async def remove(self, task_id: str) -> bool:
        """Take a task out of the pending queue (cancel); False if it was not queued."""
        return bool(await self._remove(keys=self._queue_keys, args=[task_id]))

    async def requeue(self, task_id: str, node_id: str) -> bool:
        """Put a task back in its old place and free its slot on ``node_id``."""
        result = await self._requeue(
            keys=[
                *self._queue_keys,
                self._keys.node_dispatched(node_id),
                self._keys.task(task_id),
            ],
            args=[task_id, self._keys.signal(TASK_QUEUED)],
        )
        return bool(result)

    async def release(self, task_id: str, node_id: str) -> None:
        """Free the slot a finished task used on its node."""
        await self._redis.zrem(self._keys.node_dispatched(node_id), task_id)

    async def head(self, count: int) -> list[str]:
        """The next ``count`` task ids in run order."""
        return cast(list[str], await self._redis.zrange(self._keys.pending_queue(), 0, count - 1))

    async def position(self, task_id: str) -> int | None:
        """Tasks ahead of this one in the queue, or None if it is not queued."""
        rank = cast("int | None", await self._redis.zrank(self._keys.pending_queue(), task_id))
        return rank

    async def length(self) -> int:
        return await self._redis.zcard(self._keys.pending_queue())

    async def dispatched(self, node_id: str) -> dict[str, float]:
        """Task id -> claim time (ms) of the tasks placed on a node."""
        return (await self.dispatched_on([node_id]))[node_id]

    async def dispatched_on(self, node_ids: list[str]) -> dict[str, dict[str, float]]:
        """Node id -> (task id -> claim ms), for several nodes in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in node_ids:
                pipe.zrange(self._keys.node_dispatched(node_id), 0, -1, withscores=True)
            replies = await pipe.execute()
        return {node_id: dict(entries) for node_id, entries in zip(node_ids, replies, strict=True)}

    async def stats(self) -> QueueStats:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._keys.pending_queue())
            pipe.hgetall(self._keys.queue_priorities())
            pipe.zrange(self._keys.queue_since(), 0, 0, withscores=True)
            pending, priorities, oldest = await pipe.execute()
        return QueueStats(
            pending=int(pending),
            by_priority={int(p): int(n) for p, n in priorities.items()},
            oldest_queued_ms=int(oldest[0][1]) if oldest else None,
        )
