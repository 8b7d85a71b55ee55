"""The webhook outbox: a task's end, put where a balancer will announce it, once.

A task submitted with a ``webhook_url`` (``TaskRecord.webhook_url``) is put in the outbox by
the very write that ends it (:mod:`comfy_shared.task_store`): one Lua script writes the
terminal status and stores the message, so a task that ended has its message, and only one
write can end a task (the compare-and-set), so it has one message however often its end is
reported, whoever writes it (a service, or a balancer cancelling it).

A message is the hash ``webhook:{task id}`` (the ended record, when it was enqueued, the
attempts made, the last error) and its task id in the outbox, scored by when its next
delivery attempt is due. The balancer's delivery loop (``comfy_balancer.webhooks``) sends it
and either drops it (delivered), schedules it again, or moves it to the dead letters.

Bounded: a task ending while ``OUTBOX_MAX`` messages wait goes straight to the dead letters
(last error "the outbox was full": it can be retried from there), and the dead letters keep
the newest ``DEAD_MAX``.
"""

from __future__ import annotations

from typing import Final

from comfy_shared.lua import LuaScript
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys

OUTBOX_MAX: Final = 100_000
DEAD_MAX: Final = 1_000
MESSAGE_TTL_S: Final = 7 * 24 * 3600
"""How long a message (delivered, pending or dead) is kept at most."""
OUTBOX_FULL: Final = "the outbox was full"

TRIM_DEAD: Final = LuaScript(
    keys=("webhook_dead",),
    args=("webhook_key_prefix", "dead_max"),
    body="""
local excess = redis.call('ZCARD', KEY.webhook_dead) - tonumber(ARG.dead_max)
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEY.webhook_dead, 0, excess - 1)) do
    redis.call('DEL', ARG.webhook_key_prefix .. old)
  end
  redis.call('ZREMRANGEBYRANK', KEY.webhook_dead, 0, excess - 1)
end
""",
)
"""Keep the newest ``dead_max`` dead letters (and drop the messages of the others)."""

ENQUEUE_WEBHOOK: Final = LuaScript(
    keys=("webhook", "webhook_outbox", "webhook_dead"),
    args=(
        "task_id",
        "record",
        "webhook_url",
        "webhook_now_ms",
        "webhook_ttl_s",
        "outbox_max",
        "outbox_full",
    ),
    body="""
if ARG.webhook_url ~= '' then
  redis.call('ZREM', KEY.webhook_dead, ARG.task_id)
  redis.call('DEL', KEY.webhook)
  redis.call('HSET', KEY.webhook, 'record', ARG.record, 'enqueued_ms', ARG.webhook_now_ms,
             'attempts', 0)
  redis.call('EXPIRE', KEY.webhook, ARG.webhook_ttl_s)
  if redis.call('ZCARD', KEY.webhook_outbox) >= tonumber(ARG.outbox_max) then
    redis.call('HSET', KEY.webhook, 'last_error', ARG.outbox_full, 'dead_ms', ARG.webhook_now_ms)
    redis.call('ZADD', KEY.webhook_dead, ARG.webhook_now_ms, ARG.task_id)
  else
    redis.call('ZADD', KEY.webhook_outbox, ARG.webhook_now_ms, ARG.task_id)
  end
end
""",
)
"""Put an ended task's message in the outbox, when it has a webhook (any earlier message of
the same task id, possible only once its record expired and the id was taken again, goes)."""

ENQUEUE_AND_TRIM: Final = ENQUEUE_WEBHOOK.then(TRIM_DEAD)


def enqueue_arguments(
    keys: RedisKeys, record: TaskRecord, now_ms: int
) -> tuple[dict[str, str], dict[str, str | int]]:
    """Keys and arguments of :data:`ENQUEUE_AND_TRIM` for the write that ends ``record``."""
    names = {
        "webhook": keys.webhook(record.id),
        "webhook_outbox": keys.webhook_outbox(),
        "webhook_dead": keys.webhook_dead(),
    }
    args: dict[str, str | int] = {
        "webhook_url": record.webhook_url or "",
        "webhook_now_ms": now_ms,
        "webhook_ttl_s": MESSAGE_TTL_S,
        "outbox_max": OUTBOX_MAX,
        "outbox_full": OUTBOX_FULL,
        "webhook_key_prefix": keys.webhook_prefix(),
        "dead_max": DEAD_MAX,
    }
    return names, args
