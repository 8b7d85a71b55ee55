"""Server-Sent Events of one task, read from the task's Redis stream.

A client that connects without ``Last-Event-ID`` first gets the newest event (it carries the
whole current task); one that reconnects with ``Last-Event-ID`` gets exactly the events after
that id. The stream ends after the first event in a terminal state. Because the events live in
Redis, any process (any service or balancer replica) can serve them, and a dropped connection
never loses the result.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Final

from redis.exceptions import ResponseError

from comfy_shared.api.schemas import TaskView
from comfy_shared.errors import TaskNotFound
from comfy_shared.models import TaskEvent
from comfy_shared.task_store import TaskStore

SSE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies such as nginx must not buffer the stream
}
_RETRY_MS: Final = 2000


class InvalidEventId(ValueError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"Last-Event-ID {event_id!r} is not an event id of this stream")


async def open_task_events(
    store: TaskStore, task_id: str, last_event_id: str | None, *, keepalive_s: float = 15.0
) -> AsyncIterator[str]:
    """Check the request up front (unknown task, bad id) so errors are proper HTTP answers,
    then return the iterator of SSE frames."""
    latest = await store.latest_event(task_id)
    if latest is None:
        raise TaskNotFound(task_id)
    if last_event_id is not None:
        try:
            await store.read_events(task_id, after=last_event_id, count=1)
        except ResponseError as exc:
            raise InvalidEventId(last_event_id) from exc
    return _frames(store, task_id, latest, last_event_id, keepalive_s)


async def _frames(
    store: TaskStore,
    task_id: str,
    latest: tuple[str, TaskEvent],
    last_event_id: str | None,
    keepalive_s: float,
) -> AsyncIterator[str]:
    yield f"retry: {_RETRY_MS}\n\n"
    if last_event_id is None:
        yield format_event(*latest)
    cursor = last_event_id or latest[0]
    if await _nothing_more_to_come(store, task_id, cursor):
        return
    while True:
        events = await store.read_events(task_id, after=cursor, block_ms=int(keepalive_s * 1000))
        if not events:
            if await _nothing_more_to_come(store, task_id, cursor):
                return
            yield ": keepalive\n\n"
            continue
        for event_id, event in events:
            yield format_event(event_id, event)
            cursor = event_id
            if event.task.status.is_terminal:
                return


async def _nothing_more_to_come(store: TaskStore, task_id: str, cursor: str) -> bool:
    """True when the task expired, or the client already has its terminal event."""
    latest = await store.latest_event(task_id)
    if latest is None:
        return True
    latest_id, event = latest
    return event.task.status.is_terminal and _stream_order(latest_id) <= _stream_order(cursor)


def _stream_order(event_id: str) -> tuple[int, int]:
    millis, _, sequence = event_id.partition("-")
    return int(millis), int(sequence or 0)


def format_event(event_id: str, event: TaskEvent) -> str:
    data = {
        "kind": event.kind,
        "at": event.at.isoformat(),
        "task": TaskView.from_record(event.task).model_dump(mode="json"),
    }
    return f"id: {event_id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"
