"""The outbox's claims and leases against a real Redis: two claimers never hold the same
message at once, and an outcome written after the lease passed to another claim is dropped."""

import asyncio

from redis.asyncio import Redis

from comfy_balancer.webhooks.outbox import Outbox
from comfy_shared.lifecycle import Cancelled
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore

KEYS = RedisKeys("test")
LEASE_MS = 30_000


async def ended_with_webhooks(redis: Redis, count: int) -> list[str]:
    store = TaskStore(redis, KEYS)
    task_ids = [f"t{n}" for n in range(count)]
    for task_id in task_ids:
        await store.create(TaskRecord(id=task_id, webhook_url="https://hooks.example/"))
        await store.apply(task_id, Cancelled())
    return task_ids


async def test_concurrent_claims_share_out_the_due_messages(redis: Redis) -> None:
    task_ids = await ended_with_webhooks(redis, 20)
    outboxes = [Outbox(redis, KEYS) for _ in range(4)]
    now = 10**13  # every message is due

    claims = await asyncio.gather(*(outbox.claim(now, LEASE_MS, 8) for outbox in outboxes))

    held = [message.record.id for claim in claims for message in claim]
    assert sorted(held) == sorted(task_ids)  # each one claimed, by one claimer only
    assert await Outbox(redis, KEYS).claim(now, LEASE_MS, 8) == []  # all leased now
    again = await Outbox(redis, KEYS).claim(now + LEASE_MS + 1, LEASE_MS, 64)
    assert {message.attempt for message in again} == {2}  # the lease ended: the next attempt


async def test_an_outcome_after_the_lease_passed_on_changes_nothing(redis: Redis) -> None:
    await ended_with_webhooks(redis, 1)
    outbox = Outbox(redis, KEYS)
    now = 10**13
    (stale,) = await outbox.claim(now, LEASE_MS, 1)
    (current,) = await outbox.claim(now + LEASE_MS + 1, LEASE_MS, 1)

    assert not await outbox.finish(stale, "delivered", now_ms=now)
    assert await redis.zscore(KEYS.webhook_outbox(), "t0") is not None
    assert await outbox.finish(current, "again", now_ms=now, due_ms=now + 5000, error="500")
    assert await redis.zscore(KEYS.webhook_outbox(), "t0") == now + 5000
    assert await redis.hget(KEYS.webhook("t0"), "last_error") == "500"
