"""The only code that writes task keys.

Every write is an optimistic compare-and-set on the task hash's ``version`` field, done by a Lua
script that also appends the event to the task's stream, so the record and its event history can
never disagree and two writers (a service's WebSocket handler and its watchdog, or two balancer
replicas) can never silently overwrite each other: the loser re-reads and re-applies its change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, cast

from redis.asyncio import Redis

from comfy_shared.clock import now_ms, utc_now
from comfy_shared.errors import ConcurrentUpdate, TaskNotFound
from comfy_shared.models import TaskEvent, TaskEventKind, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TaskStatus, check_transition

# KEYS: task, prompt, events, recent. ARGV: record, status, prompt ('' = none), event,
# created_ms, task_id, events_maxlen, recent_cutoff_ms. A taken id returns the stored record
# (the caller needs it anyway: one round trip less). The queue's submit script extends it.
CREATE_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'record') end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'version', 1, 'record', ARGV[1])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'event', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[8])
"""

# KEYS: task, prompt, events, logs, params. ARGV: expected version, status, record, event,
# events_maxlen, ttl_s (0 = keep), ended channel, task id. Returns the new stream id, or
# 'missing' / 'stale'. A terminal write is announced on the channel: it frees a slot.
_UPDATE_SCRIPT: Final = """
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return 'missing' end
if version ~= ARGV[1] then return 'stale' end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'version', tonumber(version) + 1, 'record', ARGV[3])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', ARGV[4])
if tonumber(ARGV[6]) > 0 then
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
return id
"""

MAX_UPDATE_ATTEMPTS: Final = 20
TASK_ENDED: Final = "task-ended"
"""Signal sent (payload: task id) when a task reaches a terminal state."""

TaskChange = Callable[[TaskRecord], TaskRecord | None]
"""Returns the new record, or None when nothing needs to change."""


class TaskStore:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        retention_s: int = 24 * 3600,
        events_maxlen: int = 1000,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._retention_s = retention_s
        self._events_maxlen = events_maxlen
        self._create = redis.register_script(CREATE_SCRIPT + "return 1")
        self._update = redis.register_script(_UPDATE_SCRIPT)

    async def create(
        self, record: TaskRecord, prompt: dict[str, Any] | None = None
    ) -> tuple[TaskRecord, bool]:
        """Store a new task; if the id is taken, return the existing task and ``False``."""
        keys, args = self.create_arguments(record, prompt)
        result = await self._create(keys=keys, args=args)
        if isinstance(result, str):
            return TaskRecord.model_validate_json(result), False
        return record, True

    def create_arguments(
        self, record: TaskRecord, prompt: dict[str, Any] | None
    ) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of :data:`CREATE_SCRIPT` (also used by scripts that extend it)."""
        event = TaskEvent(kind="state", task=record)
        keys = [
            self._keys.task(record.id),
            self._keys.task_prompt(record.id),
            self._keys.task_events(record.id),
            self._keys.recent_tasks(),
        ]
        args: list[str | int] = [
            record.model_dump_json(),
            record.status.value,
            json.dumps(prompt) if prompt is not None else "",
            event.model_dump_json(),
            int(record.created_at.timestamp() * 1000),
            record.id,
            self._events_maxlen,
            now_ms() - self._retention_s * 1000,
        ]
        return keys, args

    async def delete(self, task_id: str) -> None:
        """Forget a task that was never accepted (its submission failed before anything ran)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self._keys.task_keys(task_id))
            pipe.zrem(self._keys.recent_tasks(), task_id)
            await pipe.execute()

    async def find(self, task_id: str) -> TaskRecord | None:
        raw = cast("str | None", await self._redis.hget(self._keys.task(task_id), "record"))
        return TaskRecord.model_validate_json(raw) if raw is not None else None

    async def recent_ids(self, offset: int, count: int) -> list[str]:
        """Task ids, newest first, from the retention window's index."""
        ids = await self._redis.zrevrange(self._keys.recent_tasks(), offset, offset + count - 1)
        return [str(task_id) for task_id in ids]

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

    async def get(self, task_id: str) -> TaskRecord:
        record = await self.find(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record

    async def get_prompt(self, task_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.task_prompt(task_id))
        if raw is None:
            return None
        prompt: dict[str, Any] = json.loads(raw)
        return prompt

    async def get_prompts(self, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Several graphs in one round trip."""
        raws = await self._redis.mget([self._keys.task_prompt(task_id) for task_id in task_ids])
        return {
            task_id: json.loads(raw) if raw is not None else None
            for task_id, raw in zip(task_ids, raws, strict=True)
        }

    async def update(
        self, task_id: str, change: TaskChange, kind: TaskEventKind = "state"
    ) -> TaskRecord:
        """Apply ``change`` to the current record and store it with one event, retrying on races.

        ``change`` may raise (e.g. InvalidTransition) to abort; it must be free of side effects
        because it can run more than once.
        """
        for _ in range(MAX_UPDATE_ATTEMPTS):
            version, current = await self._read_versioned(task_id)
            updated = change(current.model_copy(deep=True))
            if updated is None:
                return current
            updated.updated_at = utc_now()
            if await self._write(task_id, version, updated, kind):
                return updated
        raise ConcurrentUpdate(task_id, MAX_UPDATE_ATTEMPTS)

    async def transition(self, task_id: str, target: TaskStatus, **fields: Any) -> TaskRecord:
        """Move a task to ``target`` (checked against the state machine) and set ``fields``."""

        def apply(record: TaskRecord) -> TaskRecord:
            check_transition(task_id, record.status, target)
            return record.model_copy(update={"status": target, **fields})

        return await self.update(task_id, apply)

    async def get_params(self, task_id: str) -> dict[str, Any] | None:
        """Template values stored for dispatch (see ``RedisKeys.task_params``)."""
        raw = await self._redis.get(self._keys.task_params(task_id))
        if raw is None:
            return None
        params: dict[str, Any] = json.loads(raw)
        return params

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

    async def _read_versioned(self, task_id: str) -> tuple[str, TaskRecord]:
        version, raw = cast(
            "list[str | None]",
            await self._redis.hmget(self._keys.task(task_id), ["version", "record"]),
        )
        if version is None or raw is None:
            raise TaskNotFound(task_id)
        return version, TaskRecord.model_validate_json(raw)

    async def _write(
        self, task_id: str, version: str, record: TaskRecord, kind: TaskEventKind
    ) -> bool:
        ttl_s = self._retention_s if record.status.is_terminal else 0
        event = TaskEvent(kind=kind, task=record)
        result = await self._update(
            keys=list(self._keys.task_keys(task_id)),
            args=[
                version,
                record.status.value,
                record.model_dump_json(),
                event.model_dump_json(),
                self._events_maxlen,
                ttl_s,
                self._keys.signal(TASK_ENDED),
                task_id,
            ],
        )
        if result == "missing":
            raise TaskNotFound(task_id)
        return bool(result != "stale")
