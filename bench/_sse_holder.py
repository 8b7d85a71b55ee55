"""Holds many open event streams, in a process of its own (see ``StreamHolder``).

Each stream follows a task that exists but is in no queue, so nothing changes it: the streams
only cost the server what an idle watcher costs (its connection, its place in the hub,
heartbeats). Frames are read as they come, as a browser would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection

from comfy_shared.models import TaskRecord
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore
from comfy_testkit.sse_client import RawSseStream

OPEN_AT_ONCE = 100


@dataclass(frozen=True)
class Opened:
    streams: int
    seconds: float
    refused: dict[str, int]


@dataclass(frozen=True)
class Closed:
    frames: int
    ended_early: int  # streams the server ended while they should have stayed open
    cpu_s: float


def hold_streams(pipe: Connection, base_url: str, redis_url: str, count: int) -> None:
    """Process entry point: on "open", open ``count`` streams and answer ``Opened``; on
    "close", close them and answer ``Closed``; on "exit", return."""
    asyncio.run(_serve(pipe, base_url, redis_url, count))


async def _serve(pipe: Connection, base_url: str, redis_url: str, count: int) -> None:
    task_ids = await _create_watched_tasks(redis_url, count)
    loop = asyncio.get_running_loop()
    while (command := await loop.run_in_executor(None, pipe.recv)) != "exit":
        if command == "open":
            holding = await _open_all(base_url, task_ids)
            pipe.send(holding.opened)
        elif command == "close":
            pipe.send(await holding.close())


async def _create_watched_tasks(redis_url: str, count: int) -> list[str]:
    redis = await connect_redis(redis_url)
    store = TaskStore(redis, RedisKeys())
    ids = [f"watched-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    for task_id in ids:
        await store.create(TaskRecord(id=task_id))
    await redis.aclose()
    return ids


class _Holding:
    def __init__(self, streams: list[RawSseStream], opened: Opened) -> None:
        self.streams = streams
        self.opened = opened
        self.frames = 0
        self.ended_early = 0
        self.cpu_started = time.process_time()
        self._readers = [asyncio.create_task(self._read(stream)) for stream in streams]

    async def _read(self, stream: RawSseStream) -> None:
        while await stream.next_frame() is not None:
            self.frames += 1
        self.ended_early += 1

    async def close(self) -> Closed:
        for reader in self._readers:
            reader.cancel()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError, OSError, ValueError):
                await reader
        await asyncio.gather(*(stream.close() for stream in self.streams))
        return Closed(self.frames, self.ended_early, time.process_time() - self.cpu_started)


async def _open_all(base_url: str, task_ids: list[str]) -> _Holding:
    started = time.perf_counter()
    streams: list[RawSseStream] = []
    refused: dict[str, int] = {}
    for first in range(0, len(task_ids), OPEN_AT_ONCE):
        batch = task_ids[first : first + OPEN_AT_ONCE]
        for stream in await asyncio.gather(*(_open_one(base_url, i) for i in batch)):
            if stream.status == 200:
                streams.append(stream)
            else:
                refused[str(stream.status)] = refused.get(str(stream.status), 0) + 1
                await stream.close()
    opened = Opened(len(streams), time.perf_counter() - started, refused)
    return _Holding(streams, opened)


async def _open_one(base_url: str, task_id: str) -> RawSseStream:
    """Open a stream and wait for its first event (the task's current state)."""
    stream = await RawSseStream.open(base_url, f"/api/v1/tasks/{task_id}/events")
    if stream.status == 200:
        await stream.next_event()
    return stream
