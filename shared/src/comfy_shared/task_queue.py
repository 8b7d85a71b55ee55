"""The cluster's durable pending queue and the slots each node uses, in Redis.

Order (see README "Fair sharing"): bands first (interactive, standard, batch), then, inside a
band, fair queuing across flows. A flow is one tenant's tasks in one band (``fair``), or
every task of the band (``fifo``). Each task gets a tag on a virtual clock when it is queued:

    start = max(band's virtual time, where the flow's previous task ends)
    the flow's next task then starts at start + cost / weight

where cost is the task's predicted GPU-seconds and weight its key's share. The band is served
in tag order and its virtual time moves to the tag of each task placed: this is deficit round
robin with a quantum of GPU-seconds, kept as one sorted set, so every operation is O(log n)
whatever the number of tenants. A tenant that was idle starts at the band's virtual time,
right behind the tasks being served, however long another tenant's backlog is; a tenant
with twice the weight gets twice the GPU-seconds. ``priority`` orders a flow's own tasks
only: a task that goes ahead of its flow's lower-priority tasks takes the first of their
tags, each of them moves to the next, so other flows see the same tags as before.

Score in the pending set: ``band rank * BAND_SPAN + tag``. A batch task is also in the aging
set (by enqueue time); once it has waited ``batch_max_wait_s`` it comes before every band.

Every move is one Lua script, so the races that matter have exactly one winner:

- submit: the task record and its queue entry are written together (a crash cannot leave a
  task that is stored but never queued);
- claim: a task leaves the queue for a node only if it is still queued (a cancel or another
  balancer replica may have taken it), only if the node has a free slot and only if its key
  and its group run fewer tasks than they may;
- requeue: a task goes back to its old place (its original tag), e.g. after its node died.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, cast

from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.lua import LuaScript
from comfy_shared.models import Band, PromptOrigin, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import CREATE_TASK, TaskStore

BAND_SINCE_SPAN: Final = 10**13
"""Scores in the ``band_since`` set: ``band rank * BAND_SINCE_SPAN + enqueue ms`` (ms stay
below it until the year 2286; doubles stay exact), so a band's oldest is one range read."""
BAND_SPAN: Final = 10**12
"""Tags stay below this (virtual GPU-seconds: 30,000 years of one GPU), so bands never
overlap; scores stay doubles exact to a millisecond."""
MAX_ABS_PRIORITY: Final = 1000
MAX_REORDER: Final = 256
"""A task's priority moves it ahead of at most this many of its flow's waiting tasks (the
newest lower-priority ones): one submit rewrites at most this many tags."""
TASK_QUEUED: Final = "task-queued"
"""Signal sent when a task enters (or re-enters) the pending queue."""
FIFO_FLOW: Final = "*"
"""The one flow of a band under the ``fifo`` policy."""
FIFO_COUNT_SCAN: Final = 1000
"""Tasks of a ``fifo`` flow (every tenant's) read at most to count them per tenant."""

# Where a queued or placed task came from and whose it is: its score (so it goes back to its
# old place), enqueue time, API key and group (whose queued and running tasks are counted, so
# their limits hold across every balancer replica), flow set and order in its flow. Usage
# fields: "<key>:queued", "<key>:running", "<key>:max_running" (0: no limit), and
# "group:<group>:running".
_QUEUE: Final = LuaScript(
    keys=("pending", "since", "band_since", "aging", "places", "usage"),
    args=(),
    body="""
local SPAN = 1e12
local SINCE_SPAN = 1e13
local BATCH_RANK = 2
local function place_of(task_id)
  local raw = redis.call('HGET', KEY.places, task_id)
  if not raw then return nil end
  local score, since, owner, group, flow, order, cost, weight =
    string.match(raw, '^(.-)|(.-)|(.-)|(.-)|(.-)|(.-)|(.-)|(.*)$')
  return {score = tonumber(score), since = since, owner = owner, group = group,
          flow = flow, order = order, cost = tonumber(cost), weight = tonumber(weight)}
end
local function write_place(task_id, place)
  redis.call('HSET', KEY.places, task_id, string.format('%.17g|%s|%s|%s|%s|%s|%.17g|%.17g',
    place.score, place.since, place.owner, place.group, place.flow, place.order, place.cost,
    place.weight))
end
-- The GPU-seconds waiting in the queue (for ETAs) are kept with the counts; reset when the
-- queue empties, so float rounding cannot pile up.
local function count(place, what, by)
  if place.owner ~= '' then redis.call('HINCRBY', KEY.usage, place.owner .. ':' .. what, by) end
  if place.group ~= '' and what == 'running' then
    redis.call('HINCRBY', KEY.usage, 'group:' .. place.group .. ':running', by)
  end
  if what == 'queued' then
    if redis.call('ZCARD', KEY.pending) == 0 then
      redis.call('HDEL', KEY.usage, 'queued_gpu_s')
    else
      redis.call('HINCRBYFLOAT', KEY.usage, 'queued_gpu_s', by * place.cost)
    end
  end
end
local function usage_of(field)
  return tonumber(redis.call('HGET', KEY.usage, field) or 0)
end
local function band_of(score)
  return math.floor(score / SPAN)
end
local function enter(task_id, place)
  redis.call('ZADD', KEY.pending, place.score, task_id)
  redis.call('ZADD', KEY.since, place.since, task_id)
  redis.call('ZADD', KEY.band_since, band_of(place.score) * SINCE_SPAN + tonumber(place.since),
    task_id)
  if band_of(place.score) == BATCH_RANK then redis.call('ZADD', KEY.aging, place.since, task_id) end
  redis.call('ZADD', place.flow, place.order, task_id)
end
local function dequeue(task_id, place)
  if redis.call('ZREM', KEY.pending, task_id) == 0 then return false end
  redis.call('ZREM', KEY.since, task_id)
  redis.call('ZREM', KEY.band_since, task_id)
  redis.call('ZREM', KEY.aging, task_id)
  if place then redis.call('ZREM', place.flow, task_id) end
  return true
end
-- Tasks ahead of this one: an aged batch task comes after the older aged ones only; any
-- other after every aged batch task and those before it in the sorted set. (A batch task
-- not aged yet is not counted behind aged ones ranked after it: its position is a floor.)
local function position_of(task_id, aged_before_ms)
  local rank = redis.call('ZRANK', KEY.pending, task_id)
  if not rank then return false end
  local since = redis.call('ZSCORE', KEY.aging, task_id)
  if since and tonumber(since) <= tonumber(aged_before_ms) then
    return redis.call('ZRANK', KEY.aging, task_id)
  end
  if since then return rank end
  return rank + redis.call('ZCOUNT', KEY.aging, '-inf', aged_before_ms)
end
""",
)

# A full queue refuses a new task (-1), a key with as many tasks waiting as it may have too
# (-2); never a known id: that one answers with its task.
_ROOM_FOR_ONE_MORE: Final = _QUEUE.then(
    LuaScript(
        keys=("task",),
        args=("max_pending", "owner", "max_queued"),
        body="""
if redis.call('EXISTS', KEY.task) == 0 then
  local limit = tonumber(ARG.max_pending)
  if limit > 0 and redis.call('ZCARD', KEY.pending) >= limit then return -1 end
  local per_key = tonumber(ARG.max_queued)
  if ARG.owner ~= '' and per_key > 0 and usage_of(ARG.owner .. ':queued') >= per_key then
    return -2
  end
end
""",
    )
)

# The new task's tag (see the module doc); a task that goes ahead of lower-priority tasks of
# its flow takes the first of their tags and each of them the next. Returns 1 + the tasks
# ahead of the new one.
_ENQUEUE: Final = LuaScript(
    keys=("seq", "vtime", "flows", "flow"),
    args=(
        "task_id",
        "priority",
        "queued_ms",
        "channel",
        "owner",
        "max_running",
        "group",
        "band_rank",
        "flow_name",
        "cost_s",
        "weight",
        "aged_before_ms",
        "max_reorder",
    ),
    body="""
local seq = redis.call('INCR', KEY.seq)
local band = tonumber(ARG.band_rank)
local flow_id = ARG.band_rank .. ':' .. ARG.flow_name
-- The band's clock is the tag of the last task placed, or the lowest tag still waiting if
-- lower: a task skipped for a busy node keeps a low tag, and a newcomer must not be tagged
-- behind it.
local clock = tonumber(redis.call('HGET', KEY.vtime, band) or 0)
local lowest = redis.call('ZRANGEBYSCORE', KEY.pending, band * SPAN, '(' .. (band + 1) * SPAN,
                          'WITHSCORES', 'LIMIT', 0, 1)
if #lowest > 0 then clock = math.min(clock, tonumber(lowest[2]) - band * SPAN) end
local start = math.max(clock, tonumber(redis.call('HGET', KEY.flows, flow_id) or 0))
local next_start = start + tonumber(ARG.cost_s) / tonumber(ARG.weight)
redis.call('HSET', KEY.flows, flow_id, string.format('%.17g', next_start))
local order = -tonumber(ARG.priority) * 1e12 + seq
local score = band * SPAN + start
-- Its flow's tasks it goes ahead of (lower priority), at most the last MAX_REORDER of them:
-- each takes the next one's tag, the last the new tag. The bound keeps one submit's work in
-- Redis small however deep the flow.
redis.call('ZADD', KEY.flow, order, ARG.task_id)
local after = redis.call('ZCOUNT', KEY.flow, string.format('(%.17g', order), '+inf')
if after > 0 then
  local behind = redis.call('ZRANGE', KEY.flow, -math.min(after, tonumber(ARG.max_reorder)), -1)
  local slots = {}
  for i, id in ipairs(behind) do slots[i] = tonumber(redis.call('ZSCORE', KEY.pending, id)) end
  table.sort(slots)
  slots[#slots + 1] = score
  score = slots[1]
  for i, id in ipairs(behind) do
    local place = place_of(id)
    place.score = slots[i + 1]
    redis.call('ZADD', KEY.pending, place.score, id)
    write_place(id, place)
  end
end
local place = {score = score, since = ARG.queued_ms, owner = ARG.owner, group = ARG.group,
               flow = KEY.flow, order = string.format('%.17g', order),
               cost = tonumber(ARG.cost_s), weight = tonumber(ARG.weight)}
enter(ARG.task_id, place)
write_place(ARG.task_id, place)
count(place, 'queued', 1)
if ARG.owner ~= '' then
  redis.call('HSET', KEY.usage, ARG.owner .. ':max_running', ARG.max_running)
end
redis.call('PUBLISH', ARG.channel, ARG.task_id)
return position_of(ARG.task_id, ARG.aged_before_ms) + 1
""",
)

# The task record and its queue entry are written together: a crash cannot leave a task that
# is stored but never queued. Returns the stored record if the id is taken.
_SUBMIT: Final = _ROOM_FOR_ONE_MORE.then(CREATE_TASK).then(_ENQUEUE)

# Returns 1 claimed, 0 no longer queued (a cancel or another replica took it), -1 no free
# slot, -2 its key runs as many tasks as it may, -3 its group does (it stays queued). The
# band's virtual time moves up to the claimed task's tag.
_CLAIM: Final = _QUEUE.then(
    LuaScript(
        keys=("dispatched", "vtime", "groups"),
        args=("task_id", "slots", "now_ms"),
        body="""
if redis.call('ZCARD', KEY.dispatched) >= tonumber(ARG.slots) then return -1 end
local place = place_of(ARG.task_id)
if place then
  if place.owner ~= '' then
    local most = usage_of(place.owner .. ':max_running')
    if most > 0 and usage_of(place.owner .. ':running') >= most then return -2 end
  end
  if place.group ~= '' then
    local most = tonumber(redis.call('HGET', KEY.groups, place.group) or 0)
    if most > 0 and usage_of('group:' .. place.group .. ':running') >= most then return -3 end
  end
end
local score = redis.call('ZSCORE', KEY.pending, ARG.task_id)
if not dequeue(ARG.task_id, place) then return 0 end
score = tonumber(score)
local band = band_of(score)
local tag = score - band * SPAN
if tag > tonumber(redis.call('HGET', KEY.vtime, band) or 0) then
  redis.call('HSET', KEY.vtime, band, string.format('%.17g', tag))
end
redis.call('ZADD', KEY.dispatched, ARG.now_ms, ARG.task_id)
if place then
  count(place, 'queued', -1)
  count(place, 'running', 1)
end
return 1
""",
    )
)

# Returns 1 if the task was queued. A task cancelled while it waits gives its flow back what
# it was charged: the flow's next task starts that much earlier.
_REMOVE: Final = _QUEUE.then(
    LuaScript(
        keys=("flows",),
        args=("task_id",),
        body="""
local place = place_of(ARG.task_id)
local removed = dequeue(ARG.task_id, place)
if removed and place then
  count(place, 'queued', -1)
  local flow_id = string.match(place.flow, ':queue:flow:(.*)$')
  redis.call('HINCRBYFLOAT', KEY.flows, flow_id, -place.cost / place.weight)
end
redis.call('HDEL', KEY.places, ARG.task_id)
return removed and 1 or 0
""",
    )
)

# Back to its old place (its original tag), freeing its slot. Returns 1 if queued again, 0
# if the task has no place (it was never in this queue).
_REQUEUE: Final = _QUEUE.then(
    LuaScript(
        keys=("dispatched",),
        args=("task_id", "channel"),
        body="""
local place = place_of(ARG.task_id)
if not place then
  redis.call('ZREM', KEY.dispatched, ARG.task_id)
  return 0
end
if redis.call('ZREM', KEY.dispatched, ARG.task_id) == 1 then count(place, 'running', -1) end
if not redis.call('ZSCORE', KEY.pending, ARG.task_id) then
  enter(ARG.task_id, place)
  count(place, 'queued', 1)
end
redis.call('PUBLISH', ARG.channel, ARG.task_id)
return 1
""",
    )
)

# A finished task leaves its node's slot and the queue's memory of its place.
_RELEASE: Final = _QUEUE.then(
    LuaScript(
        keys=("dispatched",),
        args=("task_id",),
        body="""
local place = place_of(ARG.task_id)
if redis.call('ZREM', KEY.dispatched, ARG.task_id) == 1 and place then
  count(place, 'running', -1)
end
redis.call('HDEL', KEY.places, ARG.task_id)
""",
    )
)

_POSITION: Final = _QUEUE.then(
    LuaScript(
        keys=(),
        args=("task_id", "aged_before_ms"),
        body="return position_of(ARG.task_id, ARG.aged_before_ms)",
    )
)


class QueueAtCapacity(Exception):
    """The pending queue holds the most tasks allowed."""


class KeyAtCapacity(Exception):
    """The task's API key has as many tasks waiting as it may."""


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must hold a submit before it counts as done (Redis ``WAIT``)."""

    replicas: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Submitted:
    task: TaskRecord
    created: bool
    position: int | None
    replicated: bool = True
    """False: :class:`Replication` was asked for and fewer replicas confirmed in time (the
    task is written on the primary all the same)."""
    """Tasks that start before a task this call queued; None for an existing task (not
    looked up)."""


@dataclass(frozen=True, slots=True)
class KeyQuota:
    """The limits of a task's API key that the queue keeps (0 or None: no limit)."""

    max_queued: int | None = None
    max_running: int | None = None


@dataclass(frozen=True, slots=True)
class Share:
    """How a task shares its band: the flow it joins, what it costs, its key's weight, and
    the group of tenants whose running tasks are capped together."""

    flow: str = FIFO_FLOW
    cost_s: float = 1.0
    weight: float = 1.0
    group: str = ""


@dataclass(frozen=True, slots=True)
class KeyUsage:
    queued: int
    running: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    by_band: dict[Band, int]
    aged: int
    """Batch tasks that waited long enough to come before every band."""
    oldest_queued_ms: int | None
    queued_gpu_s: float
    oldest_by_band: dict[Band, int] = field(default_factory=dict)
    """When the longest-waiting task of each band with waiting tasks was queued (ms). Tasks
    queued by a version without ``band_since`` are not in it: they are missed here until they
    leave the queue (the whole queue's ``oldest_queued_ms`` has them)."""
    """Predicted GPU-seconds of every waiting task."""


class TaskQueue:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        store: TaskStore,
        *,
        batch_max_wait_s: float = 600,
        replication: Replication | None = None,
    ) -> None:
        """``replication``: a submit waits for that many replicas to confirm its write."""
        self._redis = redis
        self._replication = replication
        self._keys = keys
        self._store = store
        self._batch_max_wait_ms = int(batch_max_wait_s * 1000)
        self._submit = _SUBMIT.register(redis)
        self._claim = _CLAIM.register(redis)
        self._remove = _REMOVE.register(redis)
        self._requeue = _REQUEUE.register(redis)
        self._release = _RELEASE.register(redis)
        self._position = _POSITION.register(redis)

    @property
    def _queue_keys(self) -> dict[str, str]:
        return {
            "pending": self._keys.pending_queue(),
            "since": self._keys.queue_since(),
            "band_since": self._keys.queue_band_since(),
            "aging": self._keys.queue_aging(),
            "places": self._keys.queue_places(),
            "usage": self._keys.queue_usage(),
        }

    def _aged_before_ms(self) -> int:
        return now_ms() - self._batch_max_wait_ms

    async def submit(
        self,
        record: TaskRecord,
        prompt: Mapping[str, Any],
        *,
        inputs: Mapping[str, str] | None = None,
        origin: PromptOrigin | None = None,
        max_pending: int = 0,
        limits: KeyQuota | None = None,
        share: Share | None = None,
    ) -> Submitted:
        """Store the task and queue it in its band and flow, atomically, in one round trip; a
        taken id returns the existing task. Raises QueueAtCapacity if ``max_pending`` (0: no
        limit) tasks wait, and KeyAtCapacity if the task's key has its ``limits.max_queued``
        waiting. With ``replication``, then waits for the replicas (``Submitted.replicated``)."""
        if abs(record.priority) > MAX_ABS_PRIORITY:
            raise ValueError(f"priority must be within +-{MAX_ABS_PRIORITY}")
        keys, args = self._store.create_arguments(record, prompt, inputs or {}, origin)
        quota = limits or KeyQuota()
        share = share or Share()
        if share.cost_s <= 0 or share.weight <= 0:
            raise ValueError("a task's cost and weight must be positive")
        band = record.band.rank
        async with self._connection() as client:
            result = await self._submit(
                client=client,
                keys=keys
                | self._queue_keys
                | {
                    "seq": self._keys.queue_seq(),
                    "vtime": self._keys.queue_vtime(),
                    "flows": self._keys.queue_flows(),
                    "flow": self._keys.queue_flow(band, share.flow),
                },
                args=args
                | {
                    "max_pending": max_pending,
                    "priority": record.priority,
                    "queued_ms": now_ms(),
                    "channel": self._keys.signal(TASK_QUEUED),
                    "owner": record.key_id or "",
                    "max_queued": quota.max_queued or 0,
                    "max_running": quota.max_running or 0,
                    "group": share.group,
                    "band_rank": band,
                    "flow_name": share.flow,
                    "cost_s": repr(share.cost_s),
                    "weight": repr(share.weight),
                    "aged_before_ms": self._aged_before_ms(),
                    "max_reorder": MAX_REORDER,
                },
            )
            replicated = await self._replicated(client)
        if isinstance(result, str):
            existing = TaskRecord.model_validate_json(result)
            return Submitted(existing, created=False, position=None, replicated=replicated)
        if result == -1:
            raise QueueAtCapacity(max_pending)
        if result == -2:
            raise KeyAtCapacity(quota.max_queued)
        return Submitted(record, created=True, position=int(result) - 1, replicated=replicated)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Redis]:
        """Where a submit runs: with replication, one connection held for the script and the
        WAIT after it (WAIT counts the writes of its own connection); else the pool."""
        if self._replication is None:
            yield self._redis
            return
        async with self._redis.client() as client:
            yield client

    async def _replicated(self, client: Redis) -> bool:
        if self._replication is None:
            return True
        wanted = self._replication.replicas
        confirmed = int(await client.wait(wanted, self._replication.timeout_ms))
        return confirmed >= wanted

    async def claim(self, task_id: str, node_id: str, slots: int) -> int:
        """Move a queued task onto a node: 1 done, 0 no longer queued, -1 node full, -2 the
        task's key runs as many tasks as it may, -3 its group does."""
        result = await self._claim(
            keys=self._queue_keys
            | {
                "dispatched": self._keys.node_dispatched(node_id),
                "vtime": self._keys.queue_vtime(),
                "groups": self._keys.queue_groups(),
            },
            args={"task_id": task_id, "slots": slots, "now_ms": now_ms()},
        )
        return int(result)

    async def remove(self, task_id: str) -> bool:
        """Take a task out of the pending queue (cancel); False if it was not queued."""
        result = await self._remove(
            keys=self._queue_keys | {"flows": self._keys.queue_flows()}, args={"task_id": task_id}
        )
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
            keys=self._queue_keys | {"dispatched": self._keys.node_dispatched(node_id)},
            args={"task_id": task_id},
        )

    async def usage(self, key_id: str) -> KeyUsage:
        """How many tasks of an API key wait and run now."""
        queued, running = await self._redis.hmget(
            self._keys.queue_usage(), [f"{key_id}:queued", f"{key_id}:running"]
        )
        return KeyUsage(queued=int(queued or 0), running=int(running or 0))

    async def set_group_limit(self, group: str, max_running: int | None) -> None:
        """The most tasks the keys of ``group`` may run at once (None: no limit)."""
        if max_running is None:
            await self._redis.hdel(self._keys.queue_groups(), group)
        else:
            await self._redis.hset(self._keys.queue_groups(), group, max_running)

    async def group_limits(self) -> dict[str, int]:
        limits = cast(dict[str, str], await self._redis.hgetall(self._keys.queue_groups()))
        return {group: int(most) for group, most in limits.items()}

    async def head(self, count: int) -> list[str]:
        """The next ``count`` task ids in run order: batch tasks that waited long enough
        (oldest first), then the bands in order, fairly inside each."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(
                self._keys.queue_aging(), "-inf", self._aged_before_ms(), start=0, num=count
            )
            pipe.zrange(self._keys.pending_queue(), 0, count - 1)
            aged, ordered = await pipe.execute()
        return list(dict.fromkeys([*aged, *ordered]))[:count]

    async def position(self, task_id: str) -> int | None:
        """Tasks that start before this one under the policy (fleet-wide), or None if it is
        not queued. Caps are not foreseen: a task held by its key's cap is counted ahead."""
        result = await self._position(
            keys=self._queue_keys,
            args={"task_id": task_id, "aged_before_ms": self._aged_before_ms()},
        )
        return None if result is None else int(result)

    async def waiting_by_tenant(self, tenant: str | None = None) -> dict[str, int]:
        """Waiting tasks per tenant (only ``tenant``'s, or every tenant's), tenants with none
        left out. A ``fair`` flow is one tenant's tasks in one band: counted exactly, a
        ZCARD each. A ``fifo`` flow holds every tenant's tasks: only its first
        ``FIFO_COUNT_SCAN`` are counted, from their records. Two or three round trips."""
        flows = await self._flows(tenant)
        async with self._redis.pipeline(transaction=False) as pipe:
            for band_rank, name in flows:
                key = self._keys.queue_flow(band_rank, name)
                if name == FIFO_FLOW:
                    pipe.zrange(key, 0, FIFO_COUNT_SCAN - 1)
                else:
                    pipe.zcard(key)
            replies = await pipe.execute()
        counts: dict[str, int] = {}
        mixed: list[str] = []
        for (_, name), reply in zip(flows, replies, strict=True):
            if name == FIFO_FLOW:
                mixed.extend(reply)
            elif reply:
                counts[name] = counts.get(name, 0) + int(reply)
        for record in (await self._store.find_many(mixed)).values() if mixed else ():
            if record is not None and tenant in (None, record.tenant):
                counts[record.tenant] = counts.get(record.tenant, 0) + 1
        return counts

    async def _flows(self, tenant: str | None) -> list[tuple[int, str]]:
        """(band rank, flow name) of ``tenant``'s flows and the ``fifo`` ones, or of every
        flow that ever had a task (one per tenant and band: the flows hash never shrinks)."""
        if tenant is not None:
            return [(band.rank, name) for band in Band for name in (tenant, FIFO_FLOW)]
        fields = cast(list[str], await self._redis.hkeys(self._keys.queue_flows()))
        return [(int(rank), name) for rank, _, name in (f.partition(":") for f in fields)]

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
        """Counts and ages of the queue in one round trip: O(log n) reads, whatever its size."""
        pending = self._keys.pending_queue()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(pending)
            for band in Band:
                pipe.zcount(pending, band.rank * BAND_SPAN, f"({(band.rank + 1) * BAND_SPAN}")
            pipe.zcount(self._keys.queue_aging(), "-inf", self._aged_before_ms())
            pipe.zrange(self._keys.queue_since(), 0, 0, withscores=True)
            pipe.hget(self._keys.queue_usage(), "queued_gpu_s")
            for band in Band:
                first = band.rank * BAND_SINCE_SPAN
                pipe.zrangebyscore(
                    self._keys.queue_band_since(), first, f"({first + BAND_SINCE_SPAN}",
                    start=0, num=1, withscores=True,
                )  # fmt: skip
            replies = await pipe.execute()
        total, *by_band, aged, oldest, queued_gpu_s = replies[: -len(Band)]
        return QueueStats(
            pending=int(total),
            by_band={band: int(n) for band, n in zip(Band, by_band, strict=True) if n},
            aged=int(aged),
            oldest_queued_ms=int(oldest[0][1]) if oldest else None,
            queued_gpu_s=max(0.0, float(queued_gpu_s or 0)) if total else 0.0,
            oldest_by_band={
                band: int(head[0][1]) - band.rank * BAND_SINCE_SPAN
                for band, head in zip(Band, replies[-len(Band) :], strict=True)
                if head
            },
        )
