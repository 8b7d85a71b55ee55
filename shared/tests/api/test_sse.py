import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from comfy_shared.api.sse import HEARTBEAT, InvalidEventId, TaskEventStream, open_task_events
from comfy_shared.errors import TaskNotFound, TooManyStreams
from comfy_shared.lifecycle import Cancelled
from comfy_shared.loops import Supervisor
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_hub import StreamHub
from comfy_shared.task_store import TaskStore
from comfy_testkit.records import on_node, run, succeed

KEYS = RedisKeys("test")


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS)


@pytest.fixture
async def hub(redis_url: str, redis: Redis) -> AsyncIterator[StreamHub]:
    hub = StreamHub(redis_url, redis, max_streams=2)
    loops = Supervisor()
    loops.start("event-streams", hub.run)
    yield hub
    await loops.stop()


async def open_events(
    store: TaskStore,
    hub: StreamHub,
    task_id: str,
    last_event_id: str | None,
    heartbeat_s: float = 5,
) -> TaskEventStream:
    return await open_task_events(store, hub, KEYS, task_id, last_event_id, heartbeat_s=heartbeat_s)


def parse(frame: str) -> dict[str, str]:
    fields = {}
    for line in frame.strip().splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields


async def data_frames(stream: TaskEventStream) -> list[dict[str, str]]:
    return [parse(f) for f in [frame async for frame in stream.frames] if f.startswith("id:")]


async def test_late_client_gets_the_current_state_then_the_rest(
    store: TaskStore, hub: StreamHub
) -> None:
    await store.create(on_node("t1"))
    await run(store, "t1")
    frames = await open_events(store, hub, "t1", None)

    collected = asyncio.create_task(data_frames(frames))
    await asyncio.sleep(0.05)
    await succeed(store, "t1")
    events = await asyncio.wait_for(collected, timeout=5)

    statuses = [json.loads(e["data"])["task"]["status"] for e in events]
    assert statuses == ["running", "succeeded"]
    assert events[-1]["event"] == "state"


async def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(
    store: TaskStore, hub: StreamHub
) -> None:
    await store.create(on_node("t1"))
    await run(store, "t1")
    await succeed(store, "t1")
    all_events = await store.read_events("t1")

    frames = await open_events(store, hub, "t1", all_events[0][0])
    events = await asyncio.wait_for(data_frames(frames), timeout=5)

    assert [e["id"] for e in events] == [event_id for event_id, _ in all_events[1:]]


async def test_stream_of_a_finished_task_ends_at_once(store: TaskStore, hub: StreamHub) -> None:
    await store.create(on_node("t1"))
    await store.apply("t1", Cancelled())
    [*_, (last_id, _)] = await store.read_events("t1")

    fresh = await asyncio.wait_for(data_frames(await open_events(store, hub, "t1", None)), 2)
    resumed = await asyncio.wait_for(data_frames(await open_events(store, hub, "t1", last_id)), 2)

    assert [json.loads(e["data"])["task"]["status"] for e in fresh] == ["cancelled"]
    assert resumed == []


async def test_unknown_task_and_bad_event_id_are_refused_up_front(
    store: TaskStore, hub: StreamHub
) -> None:
    with pytest.raises(TaskNotFound):
        await open_events(store, hub, "nope", None)
    await store.create(on_node("t1"))
    with pytest.raises(InvalidEventId):
        await open_events(store, hub, "t1", "not-an-id")
    assert hub.open_streams == 0


async def test_an_idle_stream_gets_heartbeats_and_ends_when_the_task_expires(
    store: TaskStore, hub: StreamHub, redis: Redis
) -> None:
    await store.create(on_node("t1"))
    stream = await open_events(store, hub, "t1", None, heartbeat_s=0.05)
    frames = [await anext(stream.frames) for _ in range(5)]  # retry, current state, 3 beats
    assert frames[2:] == [HEARTBEAT] * 3

    await redis.delete(KEYS.task("t1"), KEYS.task_events("t1"))
    rest = await asyncio.wait_for(data_frames(stream), 2)
    assert rest == []
    assert hub.open_streams == 0


async def test_past_max_streams_a_stream_is_refused_until_one_is_closed(
    store: TaskStore, hub: StreamHub
) -> None:
    await store.create(on_node("t1"))
    first = await open_events(store, hub, "t1", None)
    await open_events(store, hub, "t1", None)
    with pytest.raises(TooManyStreams):
        await open_events(store, hub, "t1", None)

    await first.aclose()  # never iterated: its place is freed all the same
    await open_events(store, hub, "t1", None)
