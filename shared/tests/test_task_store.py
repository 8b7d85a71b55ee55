import asyncio

import pytest
from redis.asyncio import Redis

from comfy_shared.errors import InvalidTransition, TaskNotFound
from comfy_shared.models import Progress, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore

KEYS = RedisKeys("test")
RETENTION_S = 600


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS, retention_s=RETENTION_S, events_maxlen=50)


async def test_create_writes_record_prompt_event_and_recent_index(
    store: TaskStore, redis: Redis
) -> None:
    record, created = await store.create(TaskRecord(id="t1"), {"1": {"class_type": "X"}})

    assert created
    assert await redis.hget(KEYS.task("t1"), "status") == "queued"
    assert await store.get_prompt("t1") == {"1": {"class_type": "X"}}
    assert await redis.xlen(KEYS.task_events("t1")) == 1
    assert await redis.zscore(KEYS.recent_tasks(), "t1") is not None
    assert await redis.ttl(KEYS.task("t1")) == -1  # active tasks never expire
    assert (await store.get("t1")).model_dump() == record.model_dump()


async def test_create_with_a_taken_id_returns_the_existing_task(store: TaskStore) -> None:
    first, _ = await store.create(TaskRecord(id="t1", client={"n": 1}))
    again, created = await store.create(TaskRecord(id="t1", client={"n": 2}))

    assert not created
    assert again.client == first.client == {"n": 1}


async def test_terminal_transition_sets_retention_on_every_task_key(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(TaskRecord(id="t1"), {"p": 1})
    await redis.rpush(KEYS.task_logs("t1"), "a line")
    await redis.set(KEYS.task_params("t1"), "{}")
    await store.transition("t1", TaskStatus.RUNNING)
    assert await redis.ttl(KEYS.task("t1")) == -1

    await store.transition("t1", TaskStatus.SUCCEEDED)

    for key in KEYS.task_keys("t1"):
        assert 0 < await redis.ttl(key) <= RETENTION_S, key


async def test_forbidden_transition_changes_nothing(store: TaskStore, redis: Redis) -> None:
    await store.create(TaskRecord(id="t1"))
    await store.transition("t1", TaskStatus.CANCELLED)

    with pytest.raises(InvalidTransition):
        await store.transition("t1", TaskStatus.RUNNING)

    assert (await store.get("t1")).status is TaskStatus.CANCELLED
    assert await redis.xlen(KEYS.task_events("t1")) == 2


async def test_unknown_task_raises_not_found(store: TaskStore) -> None:
    assert await store.find("nope") is None
    with pytest.raises(TaskNotFound):
        await store.get("nope")
    with pytest.raises(TaskNotFound):
        await store.transition("nope", TaskStatus.RUNNING)


async def test_concurrent_terminal_transitions_have_exactly_one_winner(
    store: TaskStore,
) -> None:
    await store.create(TaskRecord(id="t1"))
    targets = [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED] * 4

    results = await asyncio.gather(
        *(store.transition("t1", target) for target in targets), return_exceptions=True
    )

    winners = [r for r in results if isinstance(r, TaskRecord)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidTransition) for r in results if r not in winners)
    assert (await store.get("t1")).status is winners[0].status


async def test_concurrent_updates_of_different_fields_are_all_kept(store: TaskStore) -> None:
    await store.create(TaskRecord(id="t1"))

    async def set_progress(step: int) -> None:
        def apply(record: TaskRecord) -> TaskRecord:
            record.client[f"step{step}"] = step
            return record

        await store.update("t1", apply, kind="progress")

    await asyncio.gather(*(set_progress(i) for i in range(10)))

    assert (await store.get("t1")).client == {f"step{i}": i for i in range(10)}


async def test_events_carry_the_whole_task_and_resume_after_an_id(store: TaskStore) -> None:
    await store.create(TaskRecord(id="t1"))
    await store.transition("t1", TaskStatus.RUNNING)
    await store.update(
        "t1", lambda r: r.model_copy(update={"progress": Progress(value=3, max=20)}), "progress"
    )

    events = await store.read_events("t1")
    assert [e.kind for _, e in events] == ["state", "state", "progress"]
    assert [e.task.status for _, e in events] == ["queued", "running", "running"]
    assert events[-1][1].task.progress == Progress(value=3, max=20)

    later = await store.read_events("t1", after=events[0][0])
    assert [event_id for event_id, _ in later] == [event_id for event_id, _ in events[1:]]


async def test_read_events_blocks_until_the_next_event(store: TaskStore) -> None:
    await store.create(TaskRecord(id="t1"))
    [(first_id, _)] = await store.read_events("t1")

    waiter = asyncio.create_task(store.read_events("t1", after=first_id, block_ms=5000))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.transition("t1", TaskStatus.RUNNING)

    [(_, event)] = await asyncio.wait_for(waiter, timeout=5)
    assert event.task.status is TaskStatus.RUNNING


async def test_update_returning_none_writes_nothing(store: TaskStore, redis: Redis) -> None:
    await store.create(TaskRecord(id="t1"))
    await store.update("t1", lambda record: None)
    assert await redis.hget(KEYS.task("t1"), "version") == "1"


async def test_delete_forgets_every_key_of_the_task(store: TaskStore, redis: Redis) -> None:
    await store.create(TaskRecord(id="t1"), {"p": 1})
    await store.delete("t1")

    assert await redis.exists(*KEYS.task_keys("t1")) == 0
    assert await redis.zscore(KEYS.recent_tasks(), "t1") is None
