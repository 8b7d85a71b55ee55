"""Server-Sent Events of one task, read from the task's Redis stream.

A client that connects without ``Last-Event-ID`` first gets the newest event (it carries the
whole current task); one that reconnects with ``Last-Event-ID`` gets exactly the events after
that id. The stream ends after the first event in a terminal state, or when the task expired.
Because the events live in Redis, any process (any service or balancer replica) can serve
them, and a dropped connection never loses the result.

Streams do not read Redis themselves: each follows its task's stream through the process's
:class:`~comfy_shared.stream_hub.StreamHub` (one connection for all of them). An idle stream
gets a comment line every ``heartbeat_s`` (so proxies keep it open) and stays open for as long
as the task may still change; a Redis outage only delays its events. Where the app knows a
waiting task's standing (the balancer: queue position and ETA), a ``queue`` event says it when
the stream opens and whenever it changed, checked at each heartbeat; it has no id, so
``Last-Event-ID`` still names the task's own events. Past the hub's
``max_streams`` a new stream is refused (``TooManyStreams``, 429).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError, ResponseError
from starlette.types import Receive, Scope, Send

from comfy_shared.api.schemas import QueueStanding, TaskView
from comfy_shared.errors import TaskNotFound
from comfy_shared.models import TaskEvent, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_clients import StreamClients
from comfy_shared.stream_hub import Follower, StreamHub, stream_order
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore

SSE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies such as nginx must not buffer the stream
}
_RETRY_MS: Final = 2000
HEARTBEAT: Final = ": keepalive\n\n"
Standing = Callable[[TaskRecord], Awaitable[QueueStanding | None]]
"""Where a waiting task stands now (None once it left the queue)."""


class InvalidEventId(ValueError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"Last-Event-ID {event_id!r} is not an event id of this stream")


@dataclass
class TaskEventStream:
    """The SSE frames of one task, and its place in the hub (freed by :meth:`aclose`)."""

    frames: AsyncGenerator[str, None]
    follower: Follower
    clients: StreamClients

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
            with self._stream.clients.serving("sse"):
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
    standing: Standing | None = None,
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
    reports = _QueueReports(standing, latest[1].task)
    frames = _frames(store, hub, task_id, latest, last_event_id, follower, heartbeat_s, reports)
    return TaskEventStream(frames, follower, hub.clients)


async def _frames(
    store: TaskStore,
    hub: StreamHub,
    task_id: str,
    latest: tuple[str, TaskEvent],
    last_event_id: str | None,
    follower: Follower,
    heartbeat_s: float,
    reports: _QueueReports,
) -> AsyncGenerator[str, None]:
    try:
        yield f"retry: {_RETRY_MS}\n\n"
        if last_event_id is None:
            yield format_event(*latest)
        if _client_has_the_end(latest, follower.cursor):
            return
        while True:
            if report := await reports.frame():
                yield report
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
                reports.task = event.task
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


class _QueueReports:
    """The ``queue`` events of a stream: a waiting task's standing, when it changed."""

    def __init__(self, standing: Standing | None, task: TaskRecord) -> None:
        self._standing = standing
        self.task = task
        self._said: QueueStanding | None = None

    async def frame(self) -> str | None:
        if self._standing is None or self.task.status is not TaskStatus.QUEUED:
            return None
        try:
            now = await self._standing(self.task)
        except RedisError:
            return None  # said at the next heartbeat
        if now is None or not _changed(self._said, now):
            return None
        self._said = now
        return f"event: queue\ndata: {now.model_dump_json()}\n\n"


def _changed(said: QueueStanding | None, now: QueueStanding) -> bool:
    """A new position, or an expected start moved by a second or more."""
    if said is None or said.queue_position != now.queue_position:
        return True
    if said.eta is None or now.eta is None:
        return said.eta != now.eta
    return abs((said.eta.start - now.eta.start).total_seconds()) >= 1


def format_event(event_id: str, event: TaskEvent) -> str:
    data = {
        "kind": event.kind,
        "at": event.at.isoformat(),
        "task": TaskView.from_record(event.task).model_dump(mode="json"),
    }
    return f"id: {event_id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"
