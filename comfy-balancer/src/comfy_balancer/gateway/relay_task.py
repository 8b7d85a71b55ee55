"""Relays one gateway prompt to its client's sockets in this process: the frames its node
wrote (``comfy_shared.frames``) and the end its record tells.

A prompt is read from two Redis streams, both through the process's one stream reader (the
``StreamHub``): its task's events (each carries the whole record) and its frames. They are
joined by these rules:

- **Attempts.** Every frame names the attempt (placement) that ran it. Frames of an attempt
  the task has left (it went back to the queue when its node was lost, or a later attempt's
  frames have come) are not relayed: after a failover the client sees the new node's run.
- **The end waits for the record.** The node's own end (``execution_success``, ``_error``,
  ``_interrupted``) and its ``executing {node: null}`` are held back; once the record is
  terminal (so ``/history/{id}`` is complete) the prompt is closed with the end message, a
  ``status`` to every socket of the user, then ``executing {node: null, prompt_id}``, in this
  order. The end message is the node's when it tells the record's truth, else one made from
  the record (cancelled while queued, a node lost, outputs that could not be stored).
- **Frames still on their way.** A record can turn terminal before the frames of its last
  moments are read (the node writes them beside its tracker, not before it). For an end the
  node reports (success, or a ComfyUI error) the relay waits up to ``FRAME_GRACE_S`` for the
  node's ``executing {node: null}``, relaying what comes meanwhile (say, the last
  ``executed``), and closes then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from comfy_balancer.gateway import relay_messages as messages
from comfy_balancer.gateway.history import output_nodes
from comfy_balancer.gateway.live import LiveOutputs
from comfy_balancer.gateway.ws_socket import ClientSocket
from comfy_shared.frames import (
    MessageFrame,
    PreviewFrame,
    StoredFrame,
    TextFrame,
    from_fields,
    preview_frame,
    preview_with_metadata_frame,
    text_frame,
)
from comfy_shared.models import ErrorType, TaskEvent, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_hub import Entry, StreamHub
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore

FRAME_GRACE_S: Final = 2.0
"""How long a terminal record waits for its node's last frames (normally they are there)."""
CATCH_UP_READS: Final = 10
"""Reads of a prompt's frames left unrelayed at its end (each up to the hub's read count)."""
IDLE_CHECK_S: Final = 15.0
"""A prompt with no news this long is checked for being gone (expired or deleted)."""
TAIL_PEEK: Final = 4
"""Frames a relay that starts mid-prompt reads back, to know whether its node already ended."""
_NODE_ENDS: Final = frozenset({"execution_success", "execution_error", "execution_interrupted"})
_ON_NODE: Final = frozenset({TaskStatus.DISPATCHED, TaskStatus.RUNNING})

OutputRewrite = Callable[[str, dict[str, Any]], dict[str, Any]]
"""(task id, ``executed`` output dict) -> the output as the gateway's clients address it."""


class Audience(Protocol):
    """The sockets of one user (tenant) in this process."""

    tenant: str

    def of_client(self, client_id: str) -> Iterable[ClientSocket]: ...

    def tell_queue(self, status: str, *, in_order_for: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class RelayTools:
    store: TaskStore
    queue: TaskQueue
    redis: Redis
    hub: StreamHub
    keys: RedisKeys
    rewrite_output: OutputRewrite
    frame_grace_s: float = FRAME_GRACE_S
    live: LiveOutputs | None = None


@dataclass(slots=True)
class _Attempt:
    """What the relay knows of one attempt's run on its node."""

    number: int
    over: bool = False
    node: str | None = None
    finished: list[str] = field(default_factory=list)
    end: tuple[str, str] | None = None  # the node's end message: (type, text)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # its executing {node: null}


class TaskRelay:
    """One gateway prompt (``task_id``) for the sockets of ``client_id`` in ``audience``."""

    def __init__(self, task_id: str, client_id: str, audience: Audience, tools: RelayTools) -> None:
        self.task_id = task_id
        self.client_id = client_id
        self._audience = audience
        self._tools = tools
        self._record: TaskRecord | None = None
        self._events_cursor = "0-0"
        self._frames_cursor = "0-0"
        self._attempt = _Attempt(0)
        self._frames: asyncio.Task[None] | None = None
        self._quiet = False
        self._told_ahead: int | None = None
        self._place_nodes: list[str] | None = None
        self.ended = False

    @property
    def running_node(self) -> str | None:
        """The node executing now, if the prompt runs (the greeting of a new socket names
        it, as ComfyUI's does)."""
        record = self._record
        if record is None or record.status is not TaskStatus.RUNNING or self._attempt.over:
            return None
        return self._attempt.node

    async def tell_place(self) -> None:
        """While the prompt waits, show how many tasks start before it, as a progress text
        on its output nodes (the frontend writes it inside the node until the prompt
        starts), to the client's sockets that take it, when it changed since last told."""
        record = self._record
        if record is None or record.status is not TaskStatus.QUEUED or self.ended:
            return
        listeners = [s for s in self._audience.of_client(self.client_id) if s.wants_places]
        if not listeners or self._quiet:
            return
        ahead = await self._tools.queue.position(self.task_id)
        if ahead is None or ahead == self._told_ahead:
            return
        self._told_ahead = ahead
        if self._place_nodes is None:
            self._place_nodes = output_nodes(await self._tools.store.get_prompt(self.task_id) or {})
        text = messages.place_in_queue(ahead)
        for socket in listeners:
            for node in self._place_nodes:
                socket.send(text_frame(node, text))

    # --- starting --------------------------------------------------------------------------

    async def open(self, *, from_now: bool) -> bool:
        """Read where the prompt is; False if its task is gone. ``from_now``: a socket
        joins a prompt under way, which gets the frames from here on (ComfyUI keeps none
        for a socket that was away), else every frame from the first."""
        latest = await self._tools.store.latest_event(self.task_id)
        if latest is None:
            return False
        self._events_cursor, event = latest
        record = self._record = event.task
        self._attempt = _Attempt(record.attempts, over=record.status is TaskStatus.QUEUED)
        if from_now:
            self._attempt.node = record.progress.node if record.progress else None
            await self._read_tail()
        return True

    async def _read_tail(self) -> None:
        """Start after the newest frame, knowing what the last few said (whether the node has
        ended the prompt already)."""
        key = self._tools.keys.task_frames(self.task_id)
        newest = cast("list[Entry]", await self._tools.redis.xrevrange(key, count=TAIL_PEEK))
        self._quiet = True
        try:
            for entry_id, fields in reversed(newest):
                await self._on_entry(entry_id, fields)
        finally:
            self._quiet = False

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until the prompt is closed (or its task is gone); cancel to stop early."""
        assert self._record is not None, "open() first"
        events = self._tools.hub.follow(
            self._tools.keys.task_events(self.task_id), self._events_cursor
        )
        try:
            await self._on_record(self._record)
            await self.tell_place()
            while not self.ended:
                entries = await events.next_entries(IDLE_CHECK_S)
                if not entries and await self._tools.store.find(self.task_id) is None:
                    return  # expired or deleted: nobody will end it any more
                for _, fields in entries:
                    await self._on_record(TaskEvent.model_validate_json(fields["event"]).task)
                    if self.ended:
                        break
        finally:
            events.close()
            await self._stop_frames()

    async def _on_record(self, record: TaskRecord) -> None:
        self._record = record
        attempt = self._attempt
        if record.attempts > attempt.number:
            self._attempt = _Attempt(record.attempts)
        elif record.attempts == attempt.number:
            attempt.over = record.status is TaskStatus.QUEUED
        if record.status in _ON_NODE or record.status.is_terminal:
            self._start_frames()
        if record.status.is_terminal:
            await self._close(record)

    def _start_frames(self) -> None:
        if self._frames is None:
            name = f"gateway-frames:{self.task_id}"
            self._frames = asyncio.create_task(self._follow_frames(), name=name)

    async def _stop_frames(self) -> None:
        if self._frames is not None:
            self._frames.cancel()
            await asyncio.wait([self._frames])

    async def _follow_frames(self) -> None:
        key = self._tools.keys.task_frames(self.task_id)
        follower = self._tools.hub.follow(key, self._frames_cursor)
        try:
            while True:
                for entry_id, fields in await follower.next_entries(IDLE_CHECK_S):
                    await self._on_entry(entry_id, fields)
        finally:
            follower.close()

    async def _on_entry(self, entry_id: str, fields: dict[str, str]) -> None:
        self._frames_cursor = entry_id
        try:
            await self._on_stored(fields)
        except Exception:  # one bad frame must not end the relay
            logger.opt(exception=True).error(
                "gateway frame not relayed", task_id=self.task_id, entry=entry_id
            )

    async def _on_stored(self, fields: dict[str, str]) -> None:
        frame = from_fields(fields)
        if frame is not None and self._current(frame):
            await self._on_frame(frame)

    def _current(self, frame: StoredFrame) -> bool:
        """Whether the frame is of the attempt the task is on (a newer one starts it)."""
        if frame.attempt > self._attempt.number:
            self._attempt = _Attempt(frame.attempt)
        return frame.attempt == self._attempt.number and not self._attempt.over

    # --- frames ----------------------------------------------------------------------------

    async def _on_frame(self, frame: StoredFrame) -> None:
        if self.ended:
            return
        if isinstance(frame, PreviewFrame):
            self._relay_preview(frame)
        elif isinstance(frame, TextFrame):
            self._to_client(text_frame(frame.node_id, frame.text))
        else:
            await self._on_message(frame)

    async def _on_message(self, frame: MessageFrame) -> None:
        try:
            message = json.loads(frame.text)
            kind, data = str(message["type"]), message.get("data")
        except (ValueError, KeyError, TypeError):
            self._to_client(frame.text)  # not ComfyUI's shape: passed on as it came
            return
        data = data if isinstance(data, dict) else {}
        attempt = self._attempt
        if kind == "executing" and data.get("node") is None:
            attempt.closed.set()  # the node's last word on the prompt: the relay closes it
            return
        if kind in _NODE_ENDS and data.get("exception_type") != "ExecutionBlocked":
            attempt.end = (kind, frame.text)  # held until the record is terminal
            return
        text = frame.text
        if kind == "execution_start":
            # As ComfyUI says when its worker takes a prompt, which is still in its queue then.
            await self._status_to_everyone(starting=True)
        elif kind == "executing":
            attempt.node = data.get("node")
        elif kind == "progress_state":
            attempt.finished = _finished_nodes(data)
        elif kind == "executed" and isinstance(data.get("output"), dict):
            if self._tools.live is not None:  # under the node's own names, for /view
                await self._tools.live.announce(self.task_id, str(data.get("node")), data["output"])
            data["output"] = self._tools.rewrite_output(self.task_id, data["output"])
            text = messages.message(kind, data)
        self._to_client(text)

    def _relay_preview(self, frame: PreviewFrame) -> None:
        if self._quiet:
            return
        with_metadata = preview_with_metadata_frame(frame.metadata, frame.image)
        plain = preview_frame(str(frame.metadata.get("image_type")), frame.image)
        for socket in self._audience.of_client(self.client_id):
            socket.send_preview(with_metadata, plain)

    # --- the end ---------------------------------------------------------------------------

    async def _close(self, record: TaskRecord) -> None:
        attempt = self._attempt
        if _node_reports(record) and not attempt.closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tools.frame_grace_s):
                    await attempt.closed.wait()
        await self._stop_frames()
        await self._catch_up_frames()
        self._to_client(await self._end_message(record))
        await self._status_to_everyone()
        self._to_client(messages.executing(self.task_id, None))
        self.ended = True

    async def _catch_up_frames(self) -> None:
        """Relay the frames in Redis the follower had not handed over yet: under load its
        reads can lag behind the record, and the last ``executed`` must still reach the
        client before the end."""
        key = self._tools.keys.task_frames(self.task_id)
        for _ in range(CATCH_UP_READS):
            try:
                entries = await self._tools.hub.read_after(key, self._frames_cursor)
            except RedisError:
                return  # the end is sent anyway
            if not entries:
                return
            for entry_id, fields in entries:
                await self._on_entry(entry_id, fields)

    async def _end_message(self, record: TaskRecord) -> str:
        attempt = self._attempt
        if (
            attempt.end is not None
            and attempt.number == record.attempts
            and attempt.end[0] in messages.ACCEPTED_ENDS[record.status]
        ):
            return attempt.end[1]
        node = None if attempt.over else attempt.node
        return messages.ending(
            record, node=node, node_type=await self._class_of(node), executed=attempt.finished
        )

    async def _class_of(self, node: str | None) -> str | None:
        if node is None:
            return None
        try:
            graph = await self._tools.store.get_prompt(self.task_id) or {}
        except RedisError:
            return None  # the end is sent anyway, without the class
        class_type = graph.get(node, {}).get("class_type")
        return class_type if isinstance(class_type, str) else None

    # --- sending ---------------------------------------------------------------------------

    def _to_client(self, frame: str | bytes) -> None:
        if self._quiet:
            return
        for socket in self._audience.of_client(self.client_id):
            socket.send(frame)

    async def _status_to_everyone(self, *, starting: bool = False) -> None:
        if self._quiet:
            return
        store, tenant = self._tools.store, self._audience.tenant
        try:
            if starting:  # the frame may be read after the task's end was recorded
                remaining = await store.count_unfinished_with(tenant, self.task_id)
            else:
                remaining = await store.count_unfinished(tenant)
        except RedisError as exc:
            # A lost notice, not a lost fact: the next status (or GET /prompt) tells it.
            logger.warning("gateway status not sent", task_id=self.task_id, error=str(exc))
            return
        self._audience.tell_queue(messages.status(remaining), in_order_for=self.client_id)


def _node_reports(record: TaskRecord) -> bool:
    """Whether the node itself ends the prompt (its frames then say so, normally before the
    record does): success, or an error ComfyUI raised while executing it."""
    if record.status is TaskStatus.SUCCEEDED:
        return True
    error = record.error
    return (
        record.status is TaskStatus.FAILED
        and error is not None
        and (error.type is ErrorType.COMFYUI)
    )


def _finished_nodes(data: dict[str, Any]) -> list[str]:
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        return []
    return [
        str(node_id)
        for node_id, state in nodes.items()
        if isinstance(state, dict) and state.get("state") == "finished"
    ]
