"""The outbox and the dead letters in Redis, as the delivery loop and the routes use them.

Messages are put in by the write that ends a task (``comfy_shared.webhook_outbox``). A replica
*claims* the due ones in one Lua script: each is pushed ``lease`` into the future in the outbox
(so no other replica sees it due while it is being sent), its attempt counted and the claim's
token stored. The outcome is written only by the holder of that token: a replica that stalled
past its lease, while another took the message over, changes nothing. So two replicas never
send the same attempt at once, and a replica that dies mid-attempt leaves the message to be
claimed again once the lease ends (the attempt counts as made).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from comfy_shared.errors import ComfyStackError
from comfy_shared.lua import LuaScript
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.webhook_outbox import DEAD_MAX, TRIM_DEAD

_CLAIM: Final = LuaScript(
    keys=("webhook_outbox",),
    args=("now_ms", "lease_ms", "batch", "token", "webhook_key_prefix"),
    body="""
local claimed = {}
local due = redis.call('ZRANGEBYSCORE', KEY.webhook_outbox, '-inf', ARG.now_ms,
                       'LIMIT', 0, ARG.batch)
for _, task_id in ipairs(due) do
  local message = ARG.webhook_key_prefix .. task_id
  if redis.call('EXISTS', message) == 0 then
    redis.call('ZREM', KEY.webhook_outbox, task_id)  -- expired: nothing left to send
  else
    redis.call('ZADD', KEY.webhook_outbox, tonumber(ARG.now_ms) + tonumber(ARG.lease_ms), task_id)
    local attempt = redis.call('HINCRBY', message, 'attempts', 1)
    redis.call('HSET', message, 'lease', ARG.token)
    local fields = redis.call('HMGET', message, 'record', 'enqueued_ms')
    table.insert(claimed, {task_id, attempt, fields[1], fields[2]})
  end
end
return claimed
""",
)

# Returns 1 when written, 0 when the lease was lost (another claim holds the message).
_FINISH: Final = LuaScript(
    keys=("webhook", "webhook_outbox", "webhook_dead"),
    args=("task_id", "token", "step", "due_ms", "error", "now_ms"),
    body="""
if redis.call('HGET', KEY.webhook, 'lease') ~= ARG.token then return 0 end
if ARG.step == 'delivered' then
  redis.call('ZREM', KEY.webhook_outbox, ARG.task_id)
  redis.call('DEL', KEY.webhook)
  return 1
end
redis.call('HDEL', KEY.webhook, 'lease')
redis.call('HSET', KEY.webhook, 'last_error', ARG.error, 'last_attempt_ms', ARG.now_ms)
if ARG.step == 'again' then
  redis.call('ZADD', KEY.webhook_outbox, ARG.due_ms, ARG.task_id)
  return 1
end
redis.call('ZREM', KEY.webhook_outbox, ARG.task_id)
redis.call('HSET', KEY.webhook, 'dead_ms', ARG.now_ms)
redis.call('ZADD', KEY.webhook_dead, ARG.now_ms, ARG.task_id)
""",
).then(TRIM_DEAD.then(LuaScript((), (), "return 1")))

# Returns 1 when the dead letter was put back in the outbox, 0 when there is none.
_REQUEUE: Final = LuaScript(
    keys=("webhook", "webhook_outbox", "webhook_dead"),
    args=("task_id", "now_ms"),
    body="""
if redis.call('ZREM', KEY.webhook_dead, ARG.task_id) == 0 then return 0 end
if redis.call('EXISTS', KEY.webhook) == 0 then return 0 end
redis.call('HSET', KEY.webhook, 'attempts', 0)
redis.call('HDEL', KEY.webhook, 'dead_ms', 'lease')
redis.call('ZADD', KEY.webhook_outbox, ARG.now_ms, ARG.task_id)
return 1
""",
)


class DeadLetterNotFound(ComfyStackError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no dead webhook for task {task_id!r}")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message this replica may send now (until its lease ends)."""

    record: TaskRecord
    attempt: int
    enqueued_ms: int
    token: str

    @property
    def message_id(self) -> str:
        return message_id(self.record.id, self.enqueued_ms)


class DeadLetter(BaseModel):
    task_id: str
    message_id: str
    url: str | None
    type: str = Field(description="The event: task.succeeded, task.failed or task.cancelled.")
    tenant: str
    attempts: int
    last_error: str
    enqueued_at: datetime
    dead_at: datetime


class Outbox:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._claim = _CLAIM.register(redis)
        self._finish = _FINISH.register(redis)
        self._requeue = _REQUEUE.register(redis)

    async def claim(self, now_ms: int, lease_ms: int, batch: int) -> list[Claimed]:
        token = secrets.token_hex(8)
        rows = await self._claim(
            keys={"webhook_outbox": self._keys.webhook_outbox()},
            args={
                "now_ms": now_ms,
                "lease_ms": lease_ms,
                "batch": batch,
                "token": token,
                "webhook_key_prefix": self._keys.webhook_prefix(),
            },
        )
        return [
            Claimed(TaskRecord.model_validate_json(record), int(attempt), int(enqueued), token)
            for _, attempt, record, enqueued in rows
        ]

    async def finish(
        self, claimed: Claimed, step: str, *, now_ms: int, due_ms: int = 0, error: str = ""
    ) -> bool:
        """Record an attempt's outcome (``step``: delivered, again or dead); False when the
        lease was lost meanwhile (nothing written)."""
        task_id = claimed.record.id
        written = await self._finish(
            keys=self._message_keys(task_id),
            args={
                "task_id": task_id,
                "token": claimed.token,
                "step": step,
                "due_ms": due_ms,
                "error": error,
                "now_ms": now_ms,
                "webhook_key_prefix": self._keys.webhook_prefix(),
                "dead_max": DEAD_MAX,
            },
        )
        return bool(written)

    async def dead_letters(self, tenant: str | None, limit: int) -> list[DeadLetter]:
        """Newest first; of one tenant, or of all (``tenant`` None)."""
        task_ids = cast(list[str], await self._redis.zrevrange(self._keys.webhook_dead(), 0, -1))
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self._keys.webhook(task_id))
            messages = cast(list[dict[str, str]], await pipe.execute())
        letters = []
        for message in messages:
            letter = _dead_letter(message) if message.get("record") else None
            if letter is not None and tenant in (None, letter.tenant):
                letters.append(letter)
                if len(letters) == limit:
                    break
        return letters

    async def requeue(self, task_id: str, tenant: str | None, now_ms: int) -> DeadLetter:
        """Put a dead letter back in the outbox, with a full schedule of attempts ahead."""
        letter = await self._dead_letter(task_id)
        if letter is None or tenant not in (None, letter.tenant):
            raise DeadLetterNotFound(task_id)
        requeued = await self._requeue(
            keys=self._message_keys(task_id), args={"task_id": task_id, "now_ms": now_ms}
        )
        if not requeued:
            raise DeadLetterNotFound(task_id)
        return letter

    async def _dead_letter(self, task_id: str) -> DeadLetter | None:
        if await self._redis.zscore(self._keys.webhook_dead(), task_id) is None:
            return None
        message = cast(dict[str, str], await self._redis.hgetall(self._keys.webhook(task_id)))
        return _dead_letter(message) if message.get("record") else None

    def _message_keys(self, task_id: str) -> dict[str, str]:
        return {
            "webhook": self._keys.webhook(task_id),
            "webhook_outbox": self._keys.webhook_outbox(),
            "webhook_dead": self._keys.webhook_dead(),
        }


def message_id(task_id: str, enqueued_ms: int) -> str:
    """Stable across attempts; unique even if the task id is taken again one day."""
    return f"msg_{task_id}_{enqueued_ms}"


def event_type(record: TaskRecord) -> str:
    return f"task.{record.status.value}"


def _dead_letter(message: dict[str, str]) -> DeadLetter:
    record = TaskRecord.model_validate_json(message["record"])
    enqueued_ms = int(message["enqueued_ms"])
    return DeadLetter(
        task_id=record.id,
        message_id=message_id(record.id, enqueued_ms),
        url=record.webhook_url,
        type=event_type(record),
        tenant=record.tenant,
        attempts=int(message.get("attempts", 0)),
        last_error=message.get("last_error", ""),
        enqueued_at=_utc(enqueued_ms),
        dead_at=_utc(int(message.get("dead_ms", enqueued_ms))),
    )


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
