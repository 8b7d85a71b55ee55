"""The only code that writes task keys (``task:{id}`` and the keys that live with it).

Every change of a record is an event decided by :mod:`comfy_shared.lifecycle` and written by
:meth:`TaskStore.apply`: an optimistic compare-and-set on the task hash's ``version`` field, in a
Lua script that also appends the change to the task's event stream, so the record and its
event history never disagree and two writers (a service's WebSocket handler and its watchdog,
or two balancer replicas) never silently overwrite each other: the loser re-reads and decides
again. Every status change is checked against the state machine before it is written.

The store also owns the keys that belong to a task beside its record: the graph, the input
files a node uploads to its ComfyUI, the claim of each attempt's submission, the ComfyUI
frames of a gateway prompt (:mod:`comfy_shared.frames`), the index of each tenant's unfinished
tasks, and the idempotency keys that name a task. The write that ends a task also counts it
in its tenant's and its API key's usage (:mod:`comfy_shared.usage`): once, as only one write
can end it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from loguru import logger
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from comfy_shared import lifecycle, task_listing, usage, webhook_outbox
from comfy_shared.clock import now_ms, utc_now
from comfy_shared.errors import ConcurrentUpdate, InvalidTransition, TaskNotFound
from comfy_shared.frames import PreviewFrame, from_fields
from comfy_shared.lua import LuaScript
from comfy_shared.models import PromptOrigin, TaskEvent, TaskEventKind, TaskRecord
from comfy_shared.outputs.catalog import inputs_holder
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TaskStatus, check_transition

CREATE_TASK: Final = LuaScript(
    keys=("task", "prompt", "inputs", "origin", "events", "recent", "tenant_recent", "unfinished"),
    args=(
        "task_id",
        "record",
        "status",
        "node",
        "workflow",
        "prompt",
        "inputs",
        "origin",
        "event",
        "created_ms",
        "events_maxlen",
        "recent_cutoff_ms",
    ),
    body="""
if redis.call('EXISTS', KEY.task) == 1 then return redis.call('HGET', KEY.task, 'record') end
redis.call('HSET', KEY.task, 'status', ARG.status, 'version', 1, 'record', ARG.record,
           'node', ARG.node, 'workflow', ARG.workflow)
if ARG.prompt ~= '' then redis.call('SET', KEY.prompt, ARG.prompt) end
if ARG.origin ~= '' then redis.call('SET', KEY.origin, ARG.origin) end
local inputs = cjson.decode(ARG.inputs)
for name, data in pairs(inputs) do redis.call('HSET', KEY.inputs, name, data) end
redis.call('XADD', KEY.events, 'MAXLEN', '~', ARG.events_maxlen, '*', 'event', ARG.event)
for _, index in ipairs({KEY.recent, KEY.tenant_recent}) do
  redis.call('ZADD', index, ARG.created_ms, ARG.task_id)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ARG.recent_cutoff_ms)
end
redis.call('ZADD', KEY.unfinished, ARG.created_ms, ARG.task_id)
""",
)
"""Store a new task, or return the stored record if the id is taken (the caller needs it
anyway: one round trip less). The queue's submit script runs it before queueing."""

_WRITE_TASK: Final = LuaScript(
    keys=("task", "events"),
    args=("version", "status", "node", "record", "event", "events_maxlen"),
    body="""
local version = redis.call('HGET', KEY.task, 'version')
if not version then return 'missing' end
if version ~= ARG.version then return 'stale' end
redis.call('HSET', KEY.task, 'status', ARG.status, 'version', tonumber(version) + 1,
           'node', ARG.node, 'record', ARG.record)
local id = redis.call('XADD', KEY.events, 'MAXLEN', '~', ARG.events_maxlen, '*', 'event', ARG.event)
""",
)
# A terminal write sets the retention on every task key, drops the input files (no attempt
# will upload them again: their hold in the output store is due now) and is announced on the
# channel: it frees a slot. The task leaves its tenant's unfinished tasks in the same write.
_RETAIN_ENDED_TASK: Final = LuaScript(
    keys=(
        "task",
        "prompt",
        "inputs",
        "origin",
        "events",
        "logs",
        "frames",
        "output_expiry",
        "unfinished",
    ),
    args=("task_id", "ttl_s", "frames_ttl_s", "channel", "inputs_holder", "now_ms"),
    body="""
redis.call('DEL', KEY.inputs)
redis.call('ZADD', KEY.output_expiry, 'XX', ARG.now_ms, ARG.inputs_holder)
redis.call('ZREM', KEY.unfinished, ARG.task_id)
for _, key in ipairs({KEY.task, KEY.prompt, KEY.origin, KEY.events, KEY.logs}) do
  redis.call('EXPIRE', key, ARG.ttl_s)
end
redis.call('EXPIRE', KEY.frames, math.min(tonumber(ARG.ttl_s), tonumber(ARG.frames_ttl_s)))
redis.call('PUBLISH', ARG.channel, ARG.task_id)
""",
)
_RETURN_ID: Final = LuaScript((), (), "return id")
_UPDATE_TASK: Final = _WRITE_TASK.then(_RETURN_ID)
# The usage is counted by the very write that ends the task: only one write can (the
# compare-and-set), so a task is counted once however often its end is reported.
# So is the webhook announcing the end (webhook_outbox): put in the outbox once.
_COUNTED_END: Final = (
    _WRITE_TASK.then(_RETAIN_ENDED_TASK)
    .then(usage.COUNT_USAGE)
    .then(webhook_outbox.ENQUEUE_AND_TRIM)
)
_END_TASK: Final = _COUNTED_END.then(_RETURN_ID)
_END_KEYED_TASK: Final = _COUNTED_END.then(usage.COUNT_KEY_USAGE).then(_RETURN_ID)
"""The end of a task submitted with an API key: its key's usage is counted too."""

_FIELD_OF_EACH: Final = """
local found = {}
for i, key in ipairs(KEYS) do found[i] = redis.call('HGET', key, ARGV[1]) end
return found
"""
"""One field of each of many task hashes in one reply (false where there is no task): for a
thousand tasks about six times faster than as many commands in a pipeline, whose replies the
client parses one by one. Plain Redis script: its keys are a list of any length, which
``LuaScript`` (named keys) does not describe."""

_RECENT_STATUSES: Final = """
local listed = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
local found = {}
for i = 1, #listed, 2 do
  local status = redis.call('HGET', ARGV[1] .. listed[i], 'status') or ''
  found[#found + 1] = {listed[i], tonumber(listed[i + 1]), status}
end
if #found == 0 then return '[]' end
return cjson.encode(found)
"""
"""A tenant's newest task ids with their created ms and status, in one reply: one JSON
string, which the client decodes at C speed (a reply of thousands of elements costs the
client milliseconds per thousand to parse). The task keys are built from their prefix: the
index names the tasks."""

IDEMPOTENCY_TTL_S: Final = 24 * 3600
MAX_UPDATE_ATTEMPTS: Final = 20
FRAMES_MAXLEN: Final = 2000
"""ComfyUI frames kept per task (the relay reads them as they come; a reader this far behind
has lost touch anyway)."""
FRAMES_KEPT_S: Final = 300
"""How long a task's frames stay once it ended: the relay closes a prompt within seconds of
its end, and previews would take room for the whole retention."""
PREVIEW_SCAN: Final = 64
"""Frames read back from the end of a task's stream to find its newest preview."""
TASK_ENDED: Final = "task-ended"
"""Signal sent (payload: task id) when a task reaches a terminal state."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A task as a tenant's index lists it."""

    task_id: str
    created_ms: int
    status: TaskStatus | None
    """None: the task is gone (forgotten, or expired since the index was trimmed)."""


@dataclass(frozen=True, slots=True)
class Submission:
    """A task with what it was submitted with: its graph and, through the ComfyUI gateway,
    its origin."""

    record: TaskRecord
    prompt: dict[str, Any] | None
    origin: PromptOrigin | None


class IdempotencyBinding(BaseModel):
    """What an idempotency key names: a task, and the fingerprint of the request that made it
    (the same key with another request is refused, not silently answered with this task)."""

    task_id: str
    fingerprint: str


class TaskStore:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        retention_s: int = 24 * 3600,
        events_maxlen: int = 1000,
        on_end: Callable[[TaskRecord], None] | None = None,
        on_retry: Callable[[lifecycle.RetryReason], None] | None = None,
    ) -> None:
        """``on_end``: called with a record that this store's :meth:`apply` just ended (once
        per task over all processes: the write that ends it wins only once); ``on_retry``: with
        the reason each time its :meth:`apply` sent a task back for another attempt (once per
        attempt, likewise)."""
        self._redis = redis
        self._on_end = on_end
        self._on_retry = on_retry
        self._keys = keys
        self._retention_s = retention_s
        self._events_maxlen = events_maxlen
        self._create = CREATE_TASK.then(LuaScript((), (), "return 1")).register(redis)
        self._update = _UPDATE_TASK.register(redis)
        self._end = _END_TASK.register(redis)
        self._end_keyed = _END_KEYED_TASK.register(redis)
        self._field_of_each = redis.register_script(_FIELD_OF_EACH)
        self._recent_statuses = redis.register_script(_RECENT_STATUSES)
        self._list = task_listing.LIST_TASKS.register(redis)

    # --- creating ------------------------------------------------------------------------------

    async def create(
        self,
        record: TaskRecord,
        prompt: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str] | None = None,
        origin: PromptOrigin | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Store a new task; if the id is taken, return the existing task and ``False``.
        ``inputs``: each input file's name -> its reference (``InputStash.keep``).
        ``origin``: what a prompt sent through the ComfyUI gateway brought."""
        keys, args = self.create_arguments(record, prompt, inputs or {}, origin)
        result = await self._create(keys=keys, args=args)
        if isinstance(result, str):
            return TaskRecord.model_validate_json(result), False
        return record, True

    def create_arguments(
        self,
        record: TaskRecord,
        prompt: Mapping[str, Any] | None,
        inputs: Mapping[str, str],
        origin: PromptOrigin | None = None,
    ) -> tuple[dict[str, str], dict[str, str | int]]:
        """Keys and arguments of :data:`CREATE_TASK` (also for scripts that extend it)."""
        event = TaskEvent(kind="state", task=record)
        keys = self._task_keys(record.id) | {
            "recent": self._keys.recent_tasks(),
            "tenant_recent": self._keys.tenant_recent(record.tenant),
            "unfinished": self._keys.tenant_unfinished(record.tenant),
        }
        keys.pop("logs")
        keys.pop("frames")
        args: dict[str, str | int] = {
            "task_id": record.id,
            "record": record.model_dump_json(),
            "status": record.status.value,
            "node": record.node_id or "",
            "workflow": record.workflow or "",
            "prompt": json.dumps(prompt) if prompt is not None else "",
            "inputs": json.dumps(inputs) if inputs else "{}",
            "origin": origin.model_dump_json() if origin is not None else "",
            "event": event.model_dump_json(),
            "created_ms": int(record.created_at.timestamp() * 1000),
            "events_maxlen": self._events_maxlen,
            "recent_cutoff_ms": now_ms() - self._retention_s * 1000,
        }
        return keys, args

    async def delete(self, record: TaskRecord) -> None:
        """Forget a task that was never accepted (its submission failed before anything ran)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self._task_keys(record.id).values())
            pipe.zrem(self._keys.recent_tasks(), record.id)
            pipe.zrem(self._keys.tenant_recent(record.tenant), record.id)
            pipe.zrem(self._keys.tenant_unfinished(record.tenant), record.id)
            pipe.zadd(self._keys.outputs_expiry(), {inputs_holder(record.id): now_ms()}, xx=True)
            await pipe.execute()

    # --- reading -------------------------------------------------------------------------------

    async def find(self, task_id: str) -> TaskRecord | None:
        raw = cast("str | None", await self._redis.hget(self._keys.task(task_id), "record"))
        return TaskRecord.model_validate_json(raw) if raw is not None else None

    async def get(self, task_id: str) -> TaskRecord:
        record = await self.find(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record

    async def find_many(self, task_ids: list[str]) -> dict[str, TaskRecord | None]:
        """Several tasks in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hget(self._keys.task(task_id), "record")
            replies = await pipe.execute()
        return {
            task_id: TaskRecord.model_validate_json(raw) if raw is not None else None
            for task_id, raw in zip(task_ids, replies, strict=True)
        }

    async def recent_ids(self, offset: int, count: int, tenant: str | None = None) -> list[str]:
        """Task ids, newest first, from the retention window's index (of one tenant, or of
        all of them)."""
        index = self._keys.tenant_recent(tenant) if tenant else self._keys.recent_tasks()
        ids = await self._redis.zrevrange(index, offset, offset + count - 1)
        return [str(task_id) for task_id in ids]

    async def recent_statuses(self, tenant: str, count: int) -> list[Listed]:
        """The tenant's ``count`` newest tasks with their status, newest first, in one round
        trip (what a listing needs to choose the tasks it then reads)."""
        listed = await self._recent_statuses(
            keys=[self._keys.tenant_recent(tenant)], args=[self._keys.task(""), count]
        )
        return [
            Listed(task_id, int(created_ms), TaskStatus(status) if status else None)
            for task_id, created_ms, status in json.loads(listed)
        ]

    async def list_recent(
        self,
        tenant: str | None,
        filters: task_listing.TaskFilter,
        *,
        limit: int,
        after: task_listing.ListPosition | int | None = None,
        budget: int = task_listing.DEFAULT_BUDGET,
    ) -> task_listing.TaskListing:
        """Up to ``limit`` recent tasks (of one tenant, or of all) that match ``filters``,
        newest first, from behind ``after``, examining at most ``budget`` tasks: fewer than
        ``limit`` with a ``next`` position means the budget ran out, not the tasks. One round
        trip (see :mod:`comfy_shared.task_listing`)."""
        index = self._keys.tenant_recent(tenant) if tenant else self._keys.recent_tasks()
        args = task_listing.list_arguments(self._keys.task(""), filters, after, limit, budget)
        return task_listing.listing_of(await self._list(keys={"index": index}, args=args))

    async def statuses(self, task_ids: list[str]) -> dict[str, TaskStatus | None]:
        """Each task's status (None: no such task), in one round trip: far less to read than
        the records when only some of many tasks are wanted."""
        keys = [self._keys.task(task_id) for task_id in task_ids]
        replies = await self._field_of_each(keys=keys, args=["status"]) if keys else []
        return {
            task_id: TaskStatus(raw) if raw else None
            for task_id, raw in zip(task_ids, replies, strict=True)
        }

    async def find_submissions(self, task_ids: list[str]) -> dict[str, Submission | None]:
        """Each task with its graph and origin (None: no such task), in one round trip."""
        if not task_ids:
            return {}
        # Sent at once, not in one pipeline: a cluster client refuses scripts and MGET there.
        records, prompts, origins = await asyncio.gather(
            self._field_of_each(
                keys=[self._keys.task(task_id) for task_id in task_ids], args=["record"]
            ),
            self._redis.mget([self._keys.task_prompt(task_id) for task_id in task_ids]),
            self._redis.mget([self._keys.task_origin(task_id) for task_id in task_ids]),
        )
        found: dict[str, Submission | None] = {}
        for task_id, record, prompt, origin in zip(
            task_ids, records, prompts, origins, strict=True
        ):
            found[task_id] = (
                Submission(
                    TaskRecord.model_validate_json(record),
                    json.loads(prompt) if prompt is not None else None,
                    PromptOrigin.model_validate_json(origin) if origin is not None else None,
                )
                if record
                else None
            )
        return found

    async def get_prompt(self, task_id: str) -> dict[str, Any] | None:
        return (await self.get_prompts([task_id]))[task_id]

    async def get_prompts(self, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Several graphs in one round trip."""
        raws = await self._redis.mget([self._keys.task_prompt(task_id) for task_id in task_ids])
        return {
            task_id: json.loads(raw) if raw is not None else None
            for task_id, raw in zip(task_ids, raws, strict=True)
        }

    async def get_origin(self, task_id: str) -> PromptOrigin | None:
        """What the task brought through the ComfyUI gateway (None: not sent that way)."""
        raw = await self._redis.get(self._keys.task_origin(task_id))
        return PromptOrigin.model_validate_json(raw) if raw is not None else None

    async def get_origins(self, task_ids: list[str]) -> dict[str, PromptOrigin | None]:
        """Several in one round trip."""
        raws = await self._redis.mget([self._keys.task_origin(task_id) for task_id in task_ids])
        return {
            task_id: PromptOrigin.model_validate_json(raw) if raw is not None else None
            for task_id, raw in zip(task_ids, raws, strict=True)
        }

    async def unfinished_ids(self, tenant: str) -> list[str]:
        """The tenant's tasks that have not ended (queued or on a node), oldest first."""
        return [
            str(task_id)
            for task_id in await self._redis.zrange(self._keys.tenant_unfinished(tenant), 0, -1)
        ]

    async def count_unfinished(self, tenant: str) -> int:
        """How many of the tenant's tasks have not ended, fleet-wide (ComfyUI's
        ``queue_remaining`` for that tenant)."""
        return int(await self._redis.zcard(self._keys.tenant_unfinished(tenant)))

    async def count_unfinished_with(self, tenant: str, task_id: str) -> int:
        """:meth:`count_unfinished` with ``task_id`` counted among them even if it has ended
        since: what ComfyUI said as that prompt started, told by a relay that learns of the
        start after the end may already be recorded."""
        key = self._keys.tenant_unfinished(tenant)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zscore(key, task_id)
            count, score = await pipe.execute()
        return int(count) + (score is None)

    async def next_prompt_number(self) -> int:
        """ComfyUI's ``number`` for a new gateway prompt: increasing over the deployment."""
        return int(await self._redis.incr(self._keys.prompt_numbers()))

    async def get_inputs(self, task_id: str) -> dict[str, str]:
        """The task's input files: name -> reference (``InputStash.load`` reads them)."""
        return cast(dict[str, str], await self._redis.hgetall(self._keys.task_inputs(task_id)))

    async def read_events(
        self, task_id: str, after: str = "0-0", *, block_ms: int | None = None, count: int = 100
    ) -> list[tuple[str, TaskEvent]]:
        """Events newer than stream id ``after``, waiting up to ``block_ms`` for the first one."""
        stream = self._keys.task_events(task_id)
        reply = cast(
            "list[tuple[str, list[tuple[str, dict[str, str]]]]]",
            await self._redis.xread({stream: after}, count=count, block=block_ms),
        )
        if not reply:
            return []
        return [
            (entry_id, TaskEvent.model_validate_json(fields["event"]))
            for entry_id, fields in reply[0][1]
        ]

    async def latest_event(self, task_id: str) -> tuple[str, TaskEvent] | None:
        """The newest event; it carries the whole current task (each write appends one)."""
        reply = cast(
            "list[tuple[str, dict[str, str]]]",
            await self._redis.xrevrange(self._keys.task_events(task_id), count=1),
        )
        if not reply:
            return None
        entry_id, fields = reply[0]
        return entry_id, TaskEvent.model_validate_json(fields["event"])

    # --- changing ------------------------------------------------------------------------------

    async def apply(self, task_id: str, event: lifecycle.TaskEvent) -> TaskRecord:
        """Apply ``event`` to the current record (see :func:`lifecycle.apply`) and store the
        result with one stream entry, deciding again on the newest record after a lost race.
        Raises :class:`lifecycle.Refused` when the event does not apply to the task now."""
        kind = lifecycle.stream_kind(event)
        for _ in range(MAX_UPDATE_ATTEMPTS):
            version, current = await self._read_versioned(task_id)
            updated = lifecycle.apply(current, event)
            updated.updated_at = utc_now()
            if await self._write(version, current, updated, kind):
                self._observe(event, updated)
                return updated
        raise ConcurrentUpdate(task_id, MAX_UPDATE_ATTEMPTS)

    def _observe(self, event: lifecycle.TaskEvent, updated: TaskRecord) -> None:
        if updated.status.is_terminal and self._on_end is not None:
            self._on_end(updated)
        reason = lifecycle.retry_reason(event, updated)
        if reason is not None and self._on_retry is not None:
            self._on_retry(reason)

    # --- the keys a task's handling needs besides its record -----------------------------------

    async def append_frames(
        self, frames: Mapping[str, list[dict[str, str]]], *, maxlen: int = FRAMES_MAXLEN
    ) -> None:
        """Append ComfyUI frames (``comfy_shared.frames`` entries) to each task's frames
        stream, in order, in one round trip. Each stream is capped at about ``maxlen`` entries
        and kept ``retention_s`` after its last append: a frame that arrives after the task
        ended (a superseded node finishing late) cannot leave a stream that never expires."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id, entries in frames.items():
                key = self._keys.task_frames(task_id)
                for fields in entries:
                    entry: dict[FieldT, EncodableT] = {k: v for k, v in fields.items()}
                    pipe.xadd(key, entry, maxlen=maxlen, approximate=True)
                pipe.expire(key, self._retention_s)
            await pipe.execute()

    async def latest_preview(
        self, task_id: str, attempt: int, *, scan: int = PREVIEW_SCAN
    ) -> PreviewFrame | None:
        """The newest preview image of the task's attempt ``attempt`` among the last ``scan``
        entries of its frames stream (a sampler sends one preview per step, beside one
        message: the newest is near the end), or None."""
        entries = cast(
            "list[tuple[str, dict[str, str]]]",
            await self._redis.xrevrange(self._keys.task_frames(task_id), count=scan),
        )
        for _, fields in entries:
            frame = from_fields(fields)
            if isinstance(frame, PreviewFrame) and frame.attempt == attempt:
                return frame
        return None

    async def claim_submission(self, task_id: str, attempt: int, node_id: str) -> bool:
        """Claim the right to send attempt ``attempt`` to ComfyUI: true for the first caller
        only, so an attempt reaches ComfyUI at most once whoever asks how often."""
        key = self._keys.task_submission(task_id, attempt)
        return bool(await self._redis.set(key, node_id, nx=True, ex=self._retention_s))

    async def release_submission(self, task_id: str, attempt: int) -> None:
        """The claimed submission never reached ComfyUI: it may be tried again."""
        await self._redis.delete(self._keys.task_submission(task_id, attempt))

    async def bind_idempotency_key(
        self, tenant: str, key: str, binding: IdempotencyBinding
    ) -> IdempotencyBinding | None:
        """Bind a tenant's idempotency ``key`` to a task for 24 h; returns what the key was
        bound to earlier, if anything (the caller then answers with that task)."""
        redis_key = self._keys.idempotency(tenant, key)
        value = binding.model_dump_json()
        if await self._redis.set(redis_key, value, nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        earlier = await self._redis.get(redis_key)
        return IdempotencyBinding.model_validate_json(earlier) if earlier is not None else None

    async def unbind_idempotency_key(self, tenant: str, key: str) -> None:
        """The request that bound ``key`` failed: a retry of it may create the task."""
        await self._redis.delete(self._keys.idempotency(tenant, key))

    # --- internals -----------------------------------------------------------------------------

    def _task_keys(self, task_id: str) -> dict[str, str]:
        return {
            "task": self._keys.task(task_id),
            "prompt": self._keys.task_prompt(task_id),
            "inputs": self._keys.task_inputs(task_id),
            "origin": self._keys.task_origin(task_id),
            "events": self._keys.task_events(task_id),
            "logs": self._keys.task_logs(task_id),
            "frames": self._keys.task_frames(task_id),
        }

    async def _read_versioned(self, task_id: str) -> tuple[str, TaskRecord]:
        version, raw = cast(
            "list[str | None]",
            await self._redis.hmget(self._keys.task(task_id), ["version", "record"]),
        )
        if version is None or raw is None:
            raise TaskNotFound(task_id)
        return version, TaskRecord.model_validate_json(raw)

    async def _write(
        self, version: str, before: TaskRecord, record: TaskRecord, kind: TaskEventKind
    ) -> bool:
        if before.status is not record.status:
            try:
                check_transition(record.id, before.status, record.status)
            except InvalidTransition:
                logger.error(
                    "illegal task state change refused",
                    task_id=record.id,
                    current=before.status.value,
                    target=record.status.value,
                )
                raise
        event = TaskEvent(kind=kind, task=record)
        keys = {"task": self._keys.task(record.id), "events": self._keys.task_events(record.id)}
        args: dict[str, str | int] = {
            "version": version,
            "status": record.status.value,
            "node": record.node_id or "",
            "record": record.model_dump_json(),
            "event": event.model_dump_json(),
            "events_maxlen": self._events_maxlen,
        }
        if record.status.is_terminal:
            result = await self._write_end(record, keys, args)
        else:
            result = await self._update(keys=keys, args=args)
        if result == "missing":
            raise TaskNotFound(record.id)
        return bool(result != "stale")

    async def _write_end(
        self, record: TaskRecord, keys: dict[str, str], args: dict[str, str | int]
    ) -> Any:
        charge = usage.charge_of(record)
        usage_keys, usage_args = usage.count_usage_arguments(self._keys, charge)
        webhook_keys, webhook_args = webhook_outbox.enqueue_arguments(self._keys, record, now_ms())
        keys = keys | self._task_keys(record.id) | usage_keys | webhook_keys
        keys["output_expiry"] = self._keys.outputs_expiry()
        keys["unfinished"] = self._keys.tenant_unfinished(record.tenant)
        args = args | usage_args | webhook_args
        args |= {
            "task_id": record.id,
            "ttl_s": self._retention_s,
            "frames_ttl_s": FRAMES_KEPT_S,
            "channel": self._keys.signal(TASK_ENDED),
            "inputs_holder": inputs_holder(record.id),
            "now_ms": now_ms(),
        }
        script = self._end if charge.key_id is None else self._end_keyed
        return await script(keys=keys, args=args)
