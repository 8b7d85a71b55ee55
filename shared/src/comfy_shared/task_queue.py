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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.lua import LuaScript
from comfy_shared.models import InputFile, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import CREATE_TASK, TaskStore

PRIORITY_SPAN: Final = 10**12
"""Arrival sequences stay below this, so priorities never overlap (scores stay exact doubles
for |priority| <= 1000)."""
MAX_ABS_PRIORITY: Final = 1000
TASK_QUEUED: Final = "task-queued"
"""Signal sent when a task enters (or re-enters) the pending queue."""

# The priority a score encodes, as the field name in the priorities hash ("+ 0" and %d turn
# Lua's -0 into "0"); and taking a task out of the pending queue.
_DEQUEUE: Final = LuaScript(
    keys=("pending", "since", "priorities"),
    args=(),
    body="""
local function priority_of(score)
  return string.format('%d', -math.floor(tonumber(score) / 1e12) + 0)
end
local function dequeue(task_id)
  local score = redis.call('ZSCORE', KEY.pending, task_id)
  if not score then return false end
  redis.call('ZREM', KEY.pending, task_id)
  redis.call('ZREM', KEY.since, task_id)
  local priority = priority_of(score)
  if redis.call('HINCRBY', KEY.priorities, priority, -1) <= 0 then
    redis.call('HDEL', KEY.priorities, priority)
  end
  return true
end
""",
)

# Where a task placed from the queue came from (its score and enqueue time, so it goes back to
# its old place) and whose it is (the API key whose queued and running tasks are counted, so
# its limits hold across every balancer replica). Usage fields: "<key>:queued",
# "<key>:running", "<key>:max_running" (0: no limit).
_PLACES: Final = LuaScript(
    keys=("places", "usage"),
    args=(),
    body="""
local function place_of(task_id)
  local place = redis.call('HGET', KEY.places, task_id)
  if not place then return nil, nil, '' end
  return string.match(place, '^(.-):(.-):(.*)$')
end
local function count(owner, what, by)
  if owner ~= '' then redis.call('HINCRBY', KEY.usage, owner .. ':' .. what, by) end
end
local function usage_of(owner, what)
  return tonumber(redis.call('HGET', KEY.usage, owner .. ':' .. what) or 0)
end
""",
)

# A full queue refuses a new task (-1), a key with as many tasks waiting as it may have too
# (-2); never a known id: that one answers with its task.
_ROOM_FOR_ONE_MORE: Final = _PLACES.then(
    LuaScript(
        keys=("task", "pending"),
        args=("max_pending", "owner", "max_queued"),
        body="""
if redis.call('EXISTS', KEY.task) == 0 then
  local limit = tonumber(ARG.max_pending)
  if limit > 0 and redis.call('ZCARD', KEY.pending) >= limit then return -1 end
  local per_key = tonumber(ARG.max_queued)
  if ARG.owner ~= '' and per_key > 0 and usage_of(ARG.owner, 'queued') >= per_key then
    return -2
  end
end
""",
    )
)

# Returns 1 + the tasks ahead of the new one.
_ENQUEUE: Final = LuaScript(
    keys=("pending", "since", "priorities", "seq", "places", "usage"),
    args=("task_id", "priority", "queued_ms", "channel", "owner", "max_running"),
    body="""
local seq = redis.call('INCR', KEY.seq)
local score = -tonumber(ARG.priority) * 1e12 + seq
redis.call('ZADD', KEY.pending, score, ARG.task_id)
redis.call('ZADD', KEY.since, ARG.queued_ms, ARG.task_id)
redis.call('HINCRBY', KEY.priorities, ARG.priority, 1)
local place = string.format('%.17g:%s:%s', score, ARG.queued_ms, ARG.owner)
redis.call('HSET', KEY.places, ARG.task_id, place)
if ARG.owner ~= '' then
  redis.call('HINCRBY', KEY.usage, ARG.owner .. ':queued', 1)
  redis.call('HSET', KEY.usage, ARG.owner .. ':max_running', ARG.max_running)
end
redis.call('PUBLISH', ARG.channel, ARG.task_id)
return redis.call('ZRANK', KEY.pending, ARG.task_id) + 1
""",
)

# The task record and its queue entry are written together: a crash cannot leave a task that
# is stored but never queued. Returns the stored record if the id is taken.
_SUBMIT: Final = _ROOM_FOR_ONE_MORE.then(CREATE_TASK).then(_ENQUEUE)

# Returns 1 claimed, 0 no longer queued (a cancel or another replica took it), -1 no free
# slot, -2 its key runs as many tasks as it may (it stays queued).
_CLAIM: Final = _DEQUEUE.then(_PLACES).then(
    LuaScript(
        keys=("dispatched",),
        args=("task_id", "slots", "now_ms"),
        body="""
if redis.call('ZCARD', KEY.dispatched) >= tonumber(ARG.slots) then return -1 end
local _, _, owner = place_of(ARG.task_id)
if owner ~= '' then
  local most = usage_of(owner, 'max_running')
  if most > 0 and usage_of(owner, 'running') >= most then return -2 end
end
if not dequeue(ARG.task_id) then return 0 end
redis.call('ZADD', KEY.dispatched, ARG.now_ms, ARG.task_id)
count(owner, 'queued', -1)
count(owner, 'running', 1)
return 1
""",
    )
)

# Returns 1 if the task was queued.
_REMOVE: Final = _DEQUEUE.then(_PLACES).then(
    LuaScript(
        keys=(),
        args=("task_id",),
        body="""
local _, _, owner = place_of(ARG.task_id)
local removed = dequeue(ARG.task_id)
if removed then count(owner, 'queued', -1) end
redis.call('HDEL', KEY.places, ARG.task_id)
return removed and 1 or 0
""",
    )
)

# Back to its old place (its original score), freeing its slot. Returns 1 if queued again, 0
# if the task has no place (it was never in this queue).
_REQUEUE: Final = _DEQUEUE.then(_PLACES).then(
    LuaScript(
        keys=("dispatched",),
        args=("task_id", "channel"),
        body="""
local score, since, owner = place_of(ARG.task_id)
if redis.call('ZREM', KEY.dispatched, ARG.task_id) == 1 then count(owner, 'running', -1) end
if not score then return 0 end
if redis.call('ZADD', KEY.pending, 'NX', score, ARG.task_id) == 1 then
  redis.call('ZADD', KEY.since, since, ARG.task_id)
  redis.call('HINCRBY', KEY.priorities, priority_of(score), 1)
  count(owner, 'queued', 1)
end
redis.call('PUBLISH', ARG.channel, ARG.task_id)
return 1
""",
    )
)

# A finished task leaves its node's slot and the queue's memory of its place.
_RELEASE: Final = _PLACES.then(
    LuaScript(
        keys=("dispatched",),
        args=("task_id",),
        body="""
local _, _, owner = place_of(ARG.task_id)
if redis.call('ZREM', KEY.dispatched, ARG.task_id) == 1 then count(owner, 'running', -1) end
redis.call('HDEL', KEY.places, ARG.task_id)
""",
    )
)


class QueueAtCapacity(Exception):
    """The pending queue holds the most tasks allowed."""


class KeyAtCapacity(Exception):
    """The task's API key has as many tasks waiting as it may."""


@dataclass(frozen=True, slots=True)
class Submitted:
    task: TaskRecord
    created: bool
    position: int | None
    """Tasks ahead of a task this call queued; None for an existing task (not looked up)."""


@dataclass(frozen=True, slots=True)
class KeyQuota:
    """The limits of a task's API key that the queue keeps (0 or None: no limit)."""

    max_queued: int | None = None
    max_running: int | None = None


@dataclass(frozen=True, slots=True)
class KeyUsage:
    queued: int
    running: int


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
        self._submit = _SUBMIT.register(redis)
        self._claim = _CLAIM.register(redis)
        self._remove = _REMOVE.register(redis)
        self._requeue = _REQUEUE.register(redis)
        self._release = _RELEASE.register(redis)

    @property
    def _queue_keys(self) -> dict[str, str]:
        return {
            "pending": self._keys.pending_queue(),
            "since": self._keys.queue_since(),
            "priorities": self._keys.queue_priorities(),
            "places": self._keys.queue_places(),
            "usage": self._keys.queue_usage(),
        }

    async def submit(
        self,
        record: TaskRecord,
        prompt: Mapping[str, Any],
        *,
        inputs: list[InputFile] | None = None,
        max_pending: int = 0,
        limits: KeyQuota | None = None,
    ) -> Submitted:
        """Store the task and queue it, atomically, in one round trip; a taken id returns the
        existing task. Raises QueueAtCapacity if ``max_pending`` (0: no limit) tasks wait, and
        KeyAtCapacity if the task's key has its ``limits.max_queued`` waiting."""
        if abs(record.priority) > MAX_ABS_PRIORITY:
            raise ValueError(f"priority must be within +-{MAX_ABS_PRIORITY}")
        keys, args = self._store.create_arguments(record, prompt, inputs or [])
        quota = limits or KeyQuota()
        result = await self._submit(
            keys=keys | self._queue_keys | {"seq": self._keys.queue_seq()},
            args=args
            | {
                "max_pending": max_pending,
                "priority": record.priority,
                "queued_ms": now_ms(),
                "channel": self._keys.signal(TASK_QUEUED),
                "owner": record.key_id or "",
                "max_queued": quota.max_queued or 0,
                "max_running": quota.max_running or 0,
            },
        )
        if isinstance(result, str):
            return Submitted(TaskRecord.model_validate_json(result), created=False, position=None)
        if result == -1:
            raise QueueAtCapacity(max_pending)
        if result == -2:
            raise KeyAtCapacity(quota.max_queued)
        return Submitted(record, created=True, position=int(result) - 1)

    async def claim(self, task_id: str, node_id: str, slots: int) -> int:
        """Move a queued task onto a node: 1 done, 0 no longer queued, -1 node full, -2 the
        task's key runs as many tasks as it may."""
        result = await self._claim(
            keys=self._queue_keys | {"dispatched": self._keys.node_dispatched(node_id)},
            args={"task_id": task_id, "slots": slots, "now_ms": now_ms()},
        )
        return int(result)

    async def remove(self, task_id: str) -> bool:
        """Take a task out of the pending queue (cancel); False if it was not queued."""
        result = await self._remove(keys=self._queue_keys, args={"task_id": task_id})
        return bool(result)

    async def requeue(self, task_id: str, node_id: str) -> bool:
        """Put a task back in its old place and free its slot on ``node_id``."""
        result = await self._requeue(
            keys=self._queue_keys | {"dispatched": self._keys.node_dispatched(node_id)},
            args={"task_id": task_id, "channel": self._keys.signal(TASK_QUEUED)},
        )
        return bool(result)

    async def release(self, task_id: str, node_id: str) -> None:
        """Free the slot a finished task used on its node."""
        await self._release(
            keys={
                "dispatched": self._keys.node_dispatched(node_id),
                "places": self._keys.queue_places(),
                "usage": self._keys.queue_usage(),
            },
            args={"task_id": task_id},
        )

    async def usage(self, key_id: str) -> KeyUsage:
        """How many tasks of an API key wait and run now."""
        queued, running = await self._redis.hmget(
            self._keys.queue_usage(), [f"{key_id}:queued", f"{key_id}:running"]
        )
        return KeyUsage(queued=int(queued or 0), running=int(running or 0))

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
