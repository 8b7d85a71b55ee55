import asyncio

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from comfy_shared.models import Band, TaskRecord
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.signals import Signals
from comfy_shared.task_queue import (
    FIFO_FLOW,
    TASK_QUEUED,
    QueueAtCapacity,
    Replication,
    Share,
    TaskQueue,
)
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TASK_ENDED, TaskStore
from comfy_testkit.records import on_node, run, succeed
from comfy_testkit.sentinel import SentinelGroup
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys("test")
PROMPT = {"1": {"class_type": "X", "inputs": {}}}


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS)


@pytest.fixture
def queue(redis: Redis, store: TaskStore) -> TaskQueue:
    return TaskQueue(redis, KEYS, store)


async def submit(
    queue: TaskQueue,
    task_id: str,
    priority: int = 0,
    *,
    band: Band = Band.STANDARD,
    share: Share | None = None,
) -> int | None:
    record = TaskRecord(id=task_id, priority=priority, band=band)
    submitted = await queue.submit(record, PROMPT, share=share)
    assert submitted.created
    return submitted.position


async def test_higher_priority_first_and_fifo_within_a_priority(queue: TaskQueue) -> None:
    for task_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", -2), ("e", 5), ("f", 1000)]:
        await submit(queue, task_id, priority)

    assert await queue.head(10) == ["f", "b", "e", "a", "c", "d"]
    assert await queue.position("a") == 3
    assert await queue.position("nope") is None


async def test_submit_stores_the_task_and_its_queue_place_together(
    queue: TaskQueue, store: TaskStore, redis: Redis
) -> None:
    await submit(queue, "a", 3)

    assert (await store.get("a")).status is TaskStatus.QUEUED
    assert await store.get_prompt("a") == PROMPT
    assert await redis.hget(KEYS.queue_places(), "a") is not None
    again = await queue.submit(TaskRecord(id="a", priority=3), PROMPT)
    assert (again.created, again.task.id, again.position) == (False, "a", None)
    assert await queue.length() == 1


async def test_submit_tells_the_new_task_s_position(queue: TaskQueue) -> None:
    assert [await submit(queue, task_id) for task_id in "abc"] == [0, 1, 2]
    assert await submit(queue, "urgent", priority=9) == 0
    assert await submit(queue, "low", priority=-1) == 4


async def test_a_full_queue_refuses_new_tasks_but_still_returns_known_ones(
    queue: TaskQueue, store: TaskStore
) -> None:
    for task_id in "ab":
        await queue.submit(TaskRecord(id=task_id), PROMPT, max_pending=2)

    with pytest.raises(QueueAtCapacity):
        await queue.submit(TaskRecord(id="c"), PROMPT, max_pending=2)
    assert await store.find("c") is None  # nothing of it was stored
    known = await queue.submit(TaskRecord(id="a"), PROMPT, max_pending=2)
    assert (known.created, known.task.id) == (False, "a")
    assert await queue.length() == 2


async def test_submit_announces_the_task(queue: TaskQueue, redis: Redis) -> None:
    signals = Signals(redis, KEYS)
    async with signals.subscribe(TASK_QUEUED) as subscription:
        await submit(queue, "a")
        assert await subscription.next(timeout_s=5) == (TASK_QUEUED, "a")


async def test_concurrent_claims_of_one_task_have_one_winner(queue: TaskQueue) -> None:
    await submit(queue, "a")

    results = await asyncio.gather(*(queue.claim("a", f"node-{i}", 2) for i in range(8)))

    assert sorted(results) == [0] * 7 + [1]
    assert await queue.length() == 0


async def test_a_full_node_claims_nothing(queue: TaskQueue) -> None:
    for task_id in "abc":
        await submit(queue, task_id)

    assert await queue.claim("a", "n1", 2) == 1
    assert await queue.claim("b", "n1", 2) == 1
    assert await queue.claim("c", "n1", 2) == -1
    assert await queue.head(5) == ["c"]
    assert set(await queue.dispatched("n1")) == {"a", "b"}


async def test_requeue_puts_the_task_back_in_its_old_place(queue: TaskQueue) -> None:
    for task_id in "abc":
        await submit(queue, task_id)
    await queue.claim("a", "n1", 2)

    assert await queue.requeue("a", "n1")

    assert await queue.head(5) == ["a", "b", "c"]
    assert await queue.dispatched("n1") == {}
    assert (await queue.stats()).by_band == {Band.STANDARD: 3}


async def test_remove_takes_a_queued_task_out_once(queue: TaskQueue) -> None:
    await submit(queue, "a", 2)
    assert await queue.remove("a")
    assert not await queue.remove("a")
    stats = await queue.stats()
    assert (stats.pending, stats.by_band, stats.oldest_queued_ms) == (0, {}, None)


async def test_stats_count_by_band_and_know_the_oldest(queue: TaskQueue) -> None:
    await submit(queue, "a", band=Band.INTERACTIVE)
    await submit(queue, "b", band=Band.BATCH)
    await submit(queue, "c", band=Band.BATCH)
    await queue.claim("b", "n1", 2)

    stats = await queue.stats()

    assert stats.pending == 2
    assert stats.by_band == {Band.INTERACTIVE: 1, Band.BATCH: 1}
    assert (stats.aged, stats.oldest_queued_ms is not None) == (0, True)


async def test_stats_know_each_bands_oldest_by_age_not_by_run_order(
    queue: TaskQueue, redis: Redis
) -> None:
    await submit(queue, "old-batch", band=Band.BATCH)
    await submit(queue, "low", band=Band.STANDARD)
    await submit(queue, "high", priority=9, band=Band.STANDARD)  # runs first, came later
    await submit(queue, "new-batch", band=Band.BATCH)
    since = {task: int(await redis.zscore(KEYS.queue_since(), task) or 0)
             for task in ("old-batch", "low", "new-batch")}  # fmt: skip
    assert await queue.head(1) == ["high"]

    first = await queue.stats()
    for task in ("old-batch", "low", "high"):
        assert await queue.claim(task, "n1", 3) == 1
    second = await queue.stats()
    await queue.requeue("old-batch", "n1")
    third = await queue.stats()

    assert first.oldest_by_band == {Band.BATCH: since["old-batch"], Band.STANDARD: since["low"]}
    assert second.oldest_by_band == {Band.BATCH: since["new-batch"]}
    assert third.oldest_by_band == {Band.BATCH: since["old-batch"]}  # its old place and age


async def test_waiting_tasks_are_counted_per_tenant_in_fair_and_fifo_flows(
    queue: TaskQueue,
) -> None:
    placed = [  # (id, tenant, band, flow): "*" is the one flow of a band under fifo
        ("a1", "ann", Band.STANDARD, "ann"), ("a2", "ann", Band.BATCH, "ann"),
        ("a3", "ann", Band.STANDARD, "ann"), ("b1", "bo", Band.STANDARD, "bo"),
        ("f1", "ann", Band.INTERACTIVE, FIFO_FLOW), ("f2", "cy", Band.INTERACTIVE, FIFO_FLOW),
        ("gone", "dee", Band.STANDARD, "dee"),
    ]  # fmt: skip
    for task_id, tenant, band, flow in placed:
        record = TaskRecord(id=task_id, tenant=tenant, band=band)
        await queue.submit(record, PROMPT, share=Share(flow=flow))
    assert await queue.claim("a3", "n1", 5) == 1  # running: no longer waiting
    assert await queue.remove("gone")

    assert await queue.waiting_by_tenant() == {"ann": 3, "bo": 1, "cy": 1}
    assert await queue.waiting_by_tenant("ann") == {"ann": 3}
    assert await queue.waiting_by_tenant("dee") == {}


async def test_priority_out_of_range_is_refused(queue: TaskQueue) -> None:
    with pytest.raises(ValueError, match="priority"):
        await queue.submit(TaskRecord(id="a", priority=1001), PROMPT)


async def test_a_terminal_write_announces_the_end(store: TaskStore, redis: Redis) -> None:
    await store.create(on_node("a"))
    signals = Signals(redis, KEYS)
    async with signals.subscribe(TASK_ENDED) as subscription:
        await run(store, "a")
        await succeed(store, "a")
        assert await subscription.next(timeout_s=5) == (TASK_ENDED, "a")


# --- replication: a submit waits for replicas to hold it -----------------------------------


async def test_a_replicated_submit_is_on_the_replica_when_it_returns(
    sentinel_group: SentinelGroup,
) -> None:
    redis = await connect_redis(sentinel_group.target())
    queue = TaskQueue(redis, KEYS, TaskStore(redis, KEYS), replication=Replication(1, 5000))
    try:
        submitted = await queue.submit(TaskRecord(id="a"), PROMPT)
        again = await queue.submit(TaskRecord(id="a"), PROMPT)
    finally:
        await redis.aclose()
    assert (submitted.created, submitted.replicated) == (True, True)
    assert (again.created, again.replicated) == (False, True)
    with redis_sync.Redis(port=sentinel_group.replica.port, decode_responses=True) as replica:
        assert replica.hget(KEYS.queue_places(), "a") is not None


async def test_a_submit_no_replica_confirms_is_written_and_says_so(
    queue: TaskQueue, store: TaskStore, redis: Redis
) -> None:
    """The session's Redis has no replica."""
    waiting = TaskQueue(redis, KEYS, store, replication=Replication(1, 20))
    submitted = await waiting.submit(TaskRecord(id="a"), PROMPT)

    assert (submitted.created, submitted.replicated) == (True, False)
    assert await queue.head(10) == ["a"]
    assert (await queue.submit(TaskRecord(id="b"), PROMPT)).replicated  # none asked for


async def test_only_a_replicated_submit_survives_a_failover_right_after_it(
    sentinel_group: SentinelGroup,
) -> None:
    """Why the WAIT: the replica stalls and its link drops (as on a slow or cut-off network),
    two tasks are submitted, the primary dies, the replica is promoted. The one acknowledged without
    waiting is gone; the one that waited was never acknowledged (not replicated)."""
    redis = await connect_redis(sentinel_group.target())
    store = TaskStore(redis, KEYS)
    waiting = TaskQueue(redis, KEYS, store, replication=Replication(1, 100))
    stall = asyncio.create_task(asyncio.to_thread(stall_replica, sentinel_group, 0.8))
    try:
        await wait_for_condition(lambda: replica_stalled(redis), what="the replica stalled")
        # Its link dropped too, or what the primary sends would wait in the replica's socket.
        await redis.client_kill_filter(_type="replica")
        fast = await TaskQueue(redis, KEYS, store).submit(TaskRecord(id="fast"), PROMPT)
        waited = await waiting.submit(TaskRecord(id="waited"), PROMPT)
        sentinel_group.primary.process.kill()
        await stall
        await wait_for_condition(
            lambda: promoted(sentinel_group), timeout_s=30, interval_s=0.1, what="promotion"
        )
        assert (fast.created, fast.replicated) == (True, True)  # answered: nothing was asked
        assert (waited.created, waited.replicated) == (True, False)  # answered 503
        assert await store.find("fast") is None
    finally:
        await redis.aclose()


def stall_replica(group: SentinelGroup, seconds: float) -> None:
    """Shorter than the sentinels' down-after: the replica stays a candidate."""
    with redis_sync.Redis(port=group.replica.port, socket_timeout=seconds + 5) as replica:
        replica.execute_command("DEBUG", "SLEEP", seconds)


async def replica_stalled(redis: Redis) -> bool:
    await redis.set("probe", "x")
    return int(await redis.wait(1, 20)) == 0


async def promoted(group: SentinelGroup) -> bool:
    try:
        return group.primary_address() == (group.replica.host, group.replica.port)
    except ConnectionError:  # none named while the sentinels fail over
        return False
