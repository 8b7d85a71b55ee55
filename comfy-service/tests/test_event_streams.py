"""An idle event stream on a real service process: kept open with heartbeats past the old 5 s
cut (the pooled client's socket timeout), with nothing logged as an error."""

import asyncio
import time

from redis.asyncio import Redis

from comfy_shared.lifecycle import Cancelled
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore
from comfy_testkit.plugin import ServiceFactory
from comfy_testkit.records import on_node
from comfy_testkit.sse_client import RawSseStream
from comfy_testkit.stack import RunningComponent

HEARTBEAT_S = 0.5
IDLE_S = 7.0
"""Longer than the Redis client's 5 s socket timeout that used to cut idle streams."""


async def test_an_idle_stream_outlives_the_old_cut_with_heartbeats(
    start_service: ServiceFactory, emulator: RunningComponent, redis: Redis
) -> None:
    service = start_service(emulator.url, extra_args=["--sse-heartbeat-s", str(HEARTBEAT_S)])
    store = TaskStore(redis, RedisKeys())
    await store.create(on_node("idle-1"))
    stream = await RawSseStream.open(
        service.url, "/api/v1/tasks/idle-1/events", headers=service.auth_headers
    )
    try:
        assert stream.status == 200
        heartbeats = 0
        deadline = time.monotonic() + IDLE_S
        while time.monotonic() < deadline:
            frame = await asyncio.wait_for(stream.next_frame(), 5)
            assert frame is not None, "the stream ended while idle"
            heartbeats += frame.comment == "keepalive"

        await store.apply("idle-1", Cancelled())
        event = await asyncio.wait_for(stream.next_event(), 5)
        end = await asyncio.wait_for(stream.next_frame(), 5)
    finally:
        await stream.close()

    assert heartbeats >= IDLE_S / HEARTBEAT_S / 2
    assert event is not None
    assert event.data is not None
    assert event.data["task"]["status"] == "cancelled"
    assert end is None
    assert "ERROR" not in service.process.output()
