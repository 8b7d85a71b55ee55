import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from comfy_shared.api.sse import InvalidEventId, open_task_events
from comfy_shared.errors import TaskNotFound
from comfy_shared.lifecycle import Cancelled
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore
from comfy_testkit.records import on_node, run, succeed


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, RedisKeys("test"))


def parse(frame: str) -> dict[str, str]:
    fields = {}
    for line in frame.strip().splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields


async def data_frames(frames: AsyncIterator[str]) -> list[dict[str, str]]:
    return [parse(f) for f in [frame async for frame in frames] if f.startswith("id:")]


async def test_late_client_gets_the_current_state_then_the_rest(store: TaskStore) -> None:
    await store.create(on_node("t1"))
    await run(store, "t1")
    frames = await open_task_events(store, "t1", None, keepalive_s=5)

    collected = asyncio.create_task(data_frames(frames))
    await asyncio.sleep(0.05)
    await succeed(store, "t1")
    events = await asyncio.wait_for(collected, timeout=5)

    statuses = [json.loads(e["data"])["task"]["status"] for e in events]
    assert statuses == ["running", "succeeded"]
    assert events[-1]["event"] == "state"


async def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(
    store: TaskStore,
) -> None:
    await store.create(on_node("t1"))
    await run(store, "t1")
    await succeed(store, "t1")
    all_events = await store.read_events("t1")

    frames = await open_task_events(store, "t1", all_events[0][0], keepalive_s=5)
    events = await asyncio.wait_for(data_frames(frames), timeout=5)

    assert [e["id"] for e in events] == [event_id for event_id, _ in all_events[1:]]


async def test_stream_of_a_finished_task_ends_at_once(store: TaskStore) -> None:
    await store.create(on_node("t1"))
    await store.apply("t1", Cancelled())
    [*_, (last_id, _)] = await store.read_events("t1")

    fresh = await asyncio.wait_for(data_frames(await open_task_events(store, "t1", None)), 2)
    resumed = await asyncio.wait_for(data_frames(await open_task_events(store, "t1", last_id)), 2)

    assert [json.loads(e["data"])["task"]["status"] for e in fresh] == ["cancelled"]
    assert resumed == []


async def test_unknown_task_and_bad_event_id_are_refused_up_front(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        await open_task_events(store, "nope", None)
    await store.create(on_node("t1"))
    with pytest.raises(InvalidEventId):
        await open_task_events(store, "t1", "not-an-id")
