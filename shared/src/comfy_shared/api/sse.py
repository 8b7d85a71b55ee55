"""Server-Sent Events of one task, read from the task's Redis stream.

A client that connects without ``Last-Event-ID`` first gets the newest event (it carries the
whole current task); one that reconnects with ``Last-Event-ID`` gets exactly the events after
that id. The stream ends after the first event in a terminal state, or when the task expired.
Because the events live in Redis, any process (any service or balancer replica) can serve
them, and a dropped connection never loses the result.

Streams do not read Redis themselves: each follows its task's stream through the process's
:class:`~comfy_shared.stream_hub.StreamHub` (one connection for all of them). An idle stream
gets a comment line every ``heartbeat_s`` (so proxies keep it open) and stays open for as long
as the task may still change; a Redis outage only delays its events. Past the hub's
``max_streams`` a new stream is refused (``TooManyStreams``, 429).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final

from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError, ResponseError
from starlette.types import Receive, Scope, Send

from comfy_shared.api.schemas import TaskView
from comfy_shared.errors import TaskNotFound
from comfy_shared.models import TaskEvent
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_hub import Follower, StreamHub, stream_order
from comfy_shared.task_store import TaskStore

SSE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies such as nginx must not buffer the stream
}
_RETRY_MS: Final = 2000
HEARTBEAT: Final = ": keepalive\n\n"


class InvalidEventId(ValueError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"Last-Event-ID {event_id!r} is not an event id of this stream")


@dataclass
class TaskEventStream:
    """The SSE frames of one task, and its place in the hub (freed by :meth:`aclose`)."""

    frames: AsyncGenerator[str, None]
    follower: Follower

    async def aclose(self) -> None:
        try:
            await self.frames.aclose()
        finally:
            self.follower.close()

    def response(self) -> StreamingResponse:
        return _EventStreamResponse(self)


class _EventStreamResponse(StreamingResponse):
    """Frees the stream's place however the response ends: finished, client gone, cancelled,
    or never started (a generator that never ran cannot clean up after itself)."""

    def __init__(self, stream: TaskEventStream) -> None:
        super().__init__(stream.frames, media_type="text/event-stream", headers=SSE_HEADERS)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.aclose()


async def open_task_events(
    store: TaskStore,
    hub: StreamHub,
    keys: RedisKeys,
    task_id: str,
    last_event_id: str | None,
    *,
    heartbeat_s: float = 15.0,
) -> TaskEventStream:
    """Check the request up front (unknown task, bad id, too many streams) so errors are
    proper HTTP answers, then return the stream."""
    async with hub.pooled_turn:
        latest = await store.latest_event(task_id)
        if latest is None:
            raise TaskNotFound(task_id)
        if last_event_id is not None:
            try:
                await store.read_events(task_id, after=last_event_id, count=1)
            except ResponseError as exc:
                raise InvalidEventId(last_event_id) from exc
    follower = hub.follow(keys.task_events(task_id), last_event_id or latest[0])
    frames = _frames(store, hub, task_id, latest, last_event_id, follower, heartbeat_s)
    return TaskEventStream(frames, follower)


async def _frames(
    store: TaskStore,
    hub: StreamHub,
    task_id: str,
    latest: tuple[str, TaskEvent],
    last_event_id: str | None,
    follower: Follower,
    heartbeat_s: float,
) -> AsyncGenerator[str, None]:
    try:
        yield f"retry: {_RETRY_MS}\n\n"
        if last_event_id is None:
            yield format_event(*latest)
        if _client_has_the_end(latest, follower.cursor):
            return
        while True:
            entries = await follower.next_entries(heartbeat_s)
            if not entries:
                async with hub.pooled_turn:
                    ended = await _nothing_more_to_come(store, task_id, follower.cursor)
                if ended:
                    return
                yield HEARTBEAT
                continue
            for entry_id, fields in entries:
                event = TaskEvent.model_validate_json(fields["event"])
                yield format_event(entry_id, event)
                if event.task.status.is_terminal:
                    return
    finally:
        follower.close()


async def _nothing_more_to_come(store: TaskStore, task_id: str, cursor: str) -> bool:
    """True when the task expired, or the client already has its terminal event. While Redis
    is away nobody can tell: the stream stays open."""
    try:
        latest = await store.latest_event(task_id)
    except RedisError:
        return False
    return latest is None or _client_has_the_end(latest, cursor)


def _client_has_the_end(latest: tuple[str, TaskEvent], cursor: str) -> bool:
    latest_id, event = latest
    return event.task.status.is_terminal and stream_order(latest_id) <= stream_order(cursor)


def format_event(event_id: str, event: TaskEvent) -> str:
    data = {
        "kind": event.kind,
        "at": event.at.isoformat(),
        "task": TaskView.from_record(event.task).model_dump(mode="json"),
    }
    return f"id: {event_id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"
