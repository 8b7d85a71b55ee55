"""Which tasks hold which stored outputs: counts, the total, expiry and deletion, on a real
Redis."""

import pytest
from redis.asyncio import Redis

from comfy_shared.outputs.catalog import STALE_DELETE_MS, OutputCatalog
from comfy_shared.outputs.store import StoredBlob
from comfy_shared.redis_keys import RedisKeys

A, B, C = (StoredBlob(c * 64, size) for c, size in (("a", 100), ("b", 20), ("c", 3)))
NOW = 1_000_000


@pytest.fixture
def catalog(redis: Redis) -> OutputCatalog:
    return OutputCatalog(redis, RedisKeys("test"))


async def hold(catalog: OutputCatalog, task_id: str, blobs: list[StoredBlob], at: int = NOW) -> str:
    held = await catalog.hold(task_id, blobs, finished_ms=at, expires_ms=at + 1000, now_ms=at)
    return held.outcome


async def test_a_blob_held_by_two_tasks_is_counted_once_and_doomed_with_the_last(
    catalog: OutputCatalog,
) -> None:
    assert await hold(catalog, "t1", [A, B]) == "held"
    assert await hold(catalog, "t2", [A, C]) == "held"
    assert await catalog.total_bytes() == 123

    assert await catalog.release("t1", now_ms=NOW) == [B.digest]
    assert (await catalog.is_held("t1"), await catalog.is_held("t2")) == (False, True)
    assert await catalog.total_bytes() == 103
    assert sorted(await catalog.release("t2", now_ms=NOW)) == [A.digest, C.digest]
    assert await catalog.total_bytes() == 0


async def test_a_second_finish_of_the_same_task_holds_nothing_more(
    catalog: OutputCatalog,
) -> None:
    assert await hold(catalog, "t1", [A]) == "held"
    assert await hold(catalog, "t1", [A]) == "already"
    assert await catalog.release("t1", now_ms=NOW) == [A.digest]


async def test_a_blob_being_deleted_cannot_be_held_until_its_deletion_is_done(
    catalog: OutputCatalog,
) -> None:
    await hold(catalog, "old", [A])
    await catalog.release("old", now_ms=NOW)

    refused = await catalog.hold("new", [A, B], finished_ms=NOW, expires_ms=NOW, now_ms=NOW)
    assert (refused.outcome, refused.busy) == ("busy", (A.digest,))
    assert not await catalog.is_held("new")  # all or nothing: B was not held either

    await catalog.deleted(A.digest)
    assert await hold(catalog, "new", [A, B]) == "held"


async def test_a_deleter_that_died_leaves_its_blobs_to_the_next_sweep(
    catalog: OutputCatalog,
) -> None:
    await hold(catalog, "t1", [A, B])
    await catalog.release("t1", now_ms=NOW)
    assert await catalog.abandoned(now_ms=NOW + 1) == []  # its deleter may still be at work
    later = NOW + STALE_DELETE_MS + 1
    # A stale mark no longer blocks a hold; the blob it holds again is not deleted.
    assert await hold(catalog, "t2", [B], at=later) == "held"

    assert await catalog.abandoned(now_ms=later) == [A.digest]
    assert await catalog.abandoned(now_ms=later) == []  # claimed by the sweep that got it


async def test_due_and_oldest_order_the_tasks_for_retention(catalog: OutputCatalog) -> None:
    for index, task_id in enumerate(["t1", "t2", "t3"]):
        await hold(catalog, task_id, [C], at=NOW + index * 10_000)
    assert await catalog.due(now_ms=NOW + 11_000, limit=10) == ["t1", "t2"]
    assert await catalog.oldest(2) == ["t1", "t2"]
