"""Listing recent tasks with filters, a page at a time (``TaskStore.list_recent``), on a real
Redis: each filter, the time window, positions that survive new tasks and ties in the same
millisecond, the bound on the work, and tasks stored before the filter fields existed."""

from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from comfy_shared.clock import utc_now
from comfy_shared.lifecycle import Cancelled
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_listing import ListPosition, TaskFilter, TaskListing
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_testkit.records import NODE, on_node, run, succeed

KEYS = RedisKeys("test")
ANY = TaskFilter()
START = utc_now().replace(microsecond=0) - timedelta(minutes=5)


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS, retention_s=3600)


def at(ms: int) -> datetime:
    return START + timedelta(milliseconds=ms)


def ms_of(ms: int) -> int:
    return int(at(ms).timestamp() * 1000)


async def create(store: TaskStore, task_id: str, ms: int, **fields: object) -> None:
    await store.create(TaskRecord.model_validate({"id": task_id, "created_at": at(ms), **fields}))


def ids(listing: TaskListing) -> list[str]:
    return [record.id for record in listing.records]


async def every_page(
    store: TaskStore, filters: TaskFilter, limit: int, budget: int = 10_000
) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = await store.list_recent(None, filters, limit=limit, after=after, budget=budget)
        pages.append(ids(page))
        if page.next is None:
            return pages
        after = page.next


async def test_each_filter_keeps_only_matching_tasks_newest_first(store: TaskStore) -> None:
    await create(store, "q1", 1, tenant="acme", workflow="demo")
    await store.create(on_node("r1", created_at=at(2), workflow="demo"))
    await run(store, "r1")
    await store.create(on_node("s1", created_at=at(3), tenant="acme"))
    await run(store, "s1")
    await succeed(store, "s1")
    await create(store, "c1", 4)
    await store.apply("c1", Cancelled())

    async def listed(filters: TaskFilter, tenant: str | None = None) -> list[str]:
        return ids(await store.list_recent(tenant, filters, limit=10))

    assert await listed(ANY) == ["c1", "s1", "r1", "q1"]
    assert await listed(TaskFilter(statuses=frozenset({TaskStatus.QUEUED}))) == ["q1"]
    both = frozenset({TaskStatus.SUCCEEDED, TaskStatus.CANCELLED})
    assert await listed(TaskFilter(statuses=both)) == ["c1", "s1"]
    assert await listed(TaskFilter(node_id=NODE)) == ["s1", "r1"]
    assert await listed(TaskFilter(node_id="elsewhere")) == []
    assert await listed(TaskFilter(workflow="demo")) == ["r1", "q1"]
    assert await listed(TaskFilter(workflow="demo", node_id=NODE)) == ["r1"]
    assert await listed(ANY, tenant="acme") == ["s1", "q1"]
    assert await listed(TaskFilter(node_id=NODE), tenant="acme") == ["s1"]
    assert await listed(ANY, tenant="nobody") == []


async def test_a_time_window_takes_since_and_leaves_until(store: TaskStore) -> None:
    for ms in range(0, 100, 10):
        await create(store, f"t{ms:02d}", ms)

    window = TaskFilter(since_ms=ms_of(20), until_ms=ms_of(50))
    empty = TaskFilter(since_ms=ms_of(50), until_ms=ms_of(20))

    assert await every_page(store, window, limit=10) == [["t40", "t30", "t20"]]
    assert await every_page(store, window, limit=2) == [["t40", "t30"], ["t20"]]
    assert await every_page(store, empty, limit=10) == [[]]
    only_since = await store.list_recent(None, TaskFilter(since_ms=ms_of(80)), limit=10)
    assert ids(only_since) == ["t90", "t80"]


async def test_pages_neither_repeat_nor_skip_while_tasks_arrive(store: TaskStore) -> None:
    for n in range(6):  # two tasks in each millisecond: ties are ordered by id
        await create(store, f"a{n}", n // 2)
    seen: list[str] = []
    page = await store.list_recent(None, ANY, limit=2)
    arrivals = iter(range(100, 200))
    while True:
        seen += ids(page)
        await create(store, f"new{next(arrivals)}", 1000)  # newer than everything listed
        if page.next is None:
            break
        page = await store.list_recent(None, ANY, limit=2, after=page.next)

    assert seen == ["a5", "a4", "a3", "a2", "a1", "a0"]


async def test_a_position_whose_task_was_deleted_goes_on_behind_it(
    store: TaskStore, redis: Redis
) -> None:
    for task_id in ("b", "c", "d", "e"):  # the same millisecond
        await create(store, task_id, 7)
    await create(store, "older", 3)
    page = await store.list_recent(None, ANY, limit=2, after=None)
    assert ids(page) == ["e", "d"]
    assert page.next == ListPosition(ms_of(7), "d")
    await store.delete(await store.get("c"))

    rest = await store.list_recent(None, ANY, limit=10, after=ListPosition(ms_of(7), "c"))

    assert ids(rest) == ["b", "older"]


async def test_the_work_of_one_call_is_bounded_and_the_next_call_goes_on(
    store: TaskStore,
) -> None:
    for n in range(10):
        await create(store, f"t{n}", n)
    await create(store, "rare", 20)
    await store.apply("rare", Cancelled())
    await store.apply("t0", Cancelled())
    cancelled = TaskFilter(statuses=frozenset({TaskStatus.CANCELLED}))

    first = await store.list_recent(None, cancelled, limit=5, budget=4)
    pages = await every_page(store, cancelled, limit=5, budget=4)

    assert (ids(first), first.examined, first.next) == (["rare"], 4, ListPosition(ms_of(7), "t7"))
    assert pages == [["rare"], [], ["t0"]]


async def test_the_last_page_has_no_next_even_when_it_is_full(store: TaskStore) -> None:
    for n in range(4):
        await create(store, f"t{n}", n)

    assert await every_page(store, ANY, limit=2) == [["t3", "t2"], ["t1", "t0"]]


async def test_tasks_gone_from_redis_but_still_indexed_are_left_out(
    store: TaskStore, redis: Redis
) -> None:
    await create(store, "kept", 1)
    await create(store, "expired", 2)
    await redis.delete(KEYS.task("expired"))

    assert ids(await store.list_recent(None, ANY, limit=10)) == ["kept"]


async def test_an_offset_of_an_earlier_version_s_cursor_is_still_taken(store: TaskStore) -> None:
    for n in range(5):
        await create(store, f"t{n}", n)

    page = await store.list_recent(None, ANY, limit=2, after=2)

    assert (ids(page), page.next) == (["t2", "t1"], ListPosition(ms_of(1), "t1"))
    assert ids(await store.list_recent(None, ANY, limit=2, after=10**17)) == []


async def test_tasks_stored_before_the_filter_fields_are_filtered_by_their_records(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(on_node("old", created_at=at(1), workflow="demo"))
    await create(store, "old-none", 2)
    await store.create(on_node("new", created_at=at(3), workflow="demo"))
    for task_id in ("old", "old-none"):
        await redis.hdel(KEYS.task(task_id), "node", "workflow")

    by_node = await store.list_recent(None, TaskFilter(node_id=NODE), limit=10)
    by_workflow = await store.list_recent(None, TaskFilter(workflow="demo"), limit=10)

    assert ids(by_node) == ids(by_workflow) == ["new", "old"]


async def test_the_filter_fields_follow_the_record(store: TaskStore, redis: Redis) -> None:
    await store.create(TaskRecord(id="t1", workflow="demo", created_at=datetime.now(UTC)))
    assert await redis.hmget(KEYS.task("t1"), ["node", "workflow"]) == ["", "demo"]
    await store.apply("t1", Cancelled())
    assert await redis.hmget(KEYS.task("t1"), ["node", "workflow"]) == ["", "demo"]
    await store.create(on_node("t2"))
    await run(store, "t2")
    assert await redis.hget(KEYS.task("t2"), "node") == NODE
