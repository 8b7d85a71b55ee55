"""Keeps what ComfyUI says about gateway prompts, for the balancer's WebSocket relay.

The listener shows every frame to :meth:`FrameRecorder.offer` as it arrives, before the
tracker sees its event; ``offer`` only decides which prompt the frame is about and queues it,
so following ComfyUI never waits on Redis. One writer, the ``comfyui-frames`` loop, appends
the queued frames in arrival order to their tasks' frames streams (:mod:`comfy_shared.frames`,
through ``TaskStore.append_frames``), with the node's prompt id replaced by the task id: only
for prompts this node follows whose task came through the ComfyUI gateway (it has an
origin), or asked for previews (the balancer serves the latest at
``/api/v1/tasks/{id}/preview``). Any other /api/v1 task has no audience for them: its SSE
events say everything.

Which prompt a frame is about: its ``prompt_id`` (JSON messages, type-4 previews); for a
frame without one (a type-3 text, which ComfyUI broadcasts; a type-1 preview from a ComfyUI
that sends no metadata; a custom message without an id), the prompt running now, known from
``execution_start`` and ``executing {node: null}`` seen in the same order. ``status``,
``logs`` and ``feature_flags`` are about the node, not a prompt, and are not kept; nor are
binary types this code does not know (a client would choke on them).

Bounds: at most ``MAX_QUEUED`` frames wait for the writer (more are dropped and counted in a
warning: Redis is away or too slow); a preview replaces the waiting one of the same prompt and
node (the latest preview per node is what a client shows); a frame larger than
``MAX_FRAME_BYTES`` is dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Final

from loguru import logger
from redis.asyncio import Redis

from comfy_service.prompts import FollowedPrompts, Prompt
from comfy_shared.comfyui import (
    Event,
    Executing,
    ExecutionStart,
    FeatureFlags,
    Logs,
    PreviewImage,
    PreviewImageWithMetadata,
    ProgressText,
    Status,
    Unknown,
    UnknownBinary,
)
from comfy_shared.frames import MessageFrame, PreviewFrame, StoredFrame, TextFrame, to_fields
from comfy_shared.loops import LoopHandle
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore

MAX_QUEUED: Final = 10_000
MAX_FRAME_BYTES: Final = 4 * 2**20
WRITE_BATCH: Final = 500
"""Frames appended in one round trip at most."""
KNOWN_PROMPTS: Final = 4096
"""Prompts whose task (or absence of one) the recorder remembers: the tracker forgets a
prompt when it ends, possibly before its last frames are written."""
_ABOUT_THE_NODE: Final = (Status, Logs, FeatureFlags, UnknownBinary)


@dataclass(slots=True)
class _Waiting:
    """A frame queued for the writer; ``frame`` has attempt 0 until its prompt is known."""

    prompt_id: str
    frame: StoredFrame


class FrameRecorder:
    def __init__(
        self, *, store: TaskStore, prompts: FollowedPrompts, redis: Redis, keys: RedisKeys
    ) -> None:
        self._store = store
        self._prompts = prompts
        self._redis = redis
        self._keys = keys
        self._queue: list[_Waiting] = []
        self._ready = asyncio.Event()
        self._batch: list[_Waiting] = []
        self._waiting_previews: dict[tuple[str, str], _Waiting] = {}
        self._running: str | None = None  # prompt id running in ComfyUI now
        self._node: str | None = None  # the node executing now
        self._tasks: OrderedDict[str, Prompt | None] = OrderedDict()  # of gateway prompts
        self._dropped = 0

    # --- the listener's side: no waiting -------------------------------------------------------

    def offer(self, raw: str | bytes, event: Event) -> None:
        """Queue a frame about a prompt (see the module docstring); never blocks."""
        prompt_id = self._prompt_about(event)
        self._follow_execution(event)
        if prompt_id is None:
            return
        frame = self._stored(raw, event, prompt_id)
        if frame is not None:
            self._queue_frame(_Waiting(prompt_id, frame))

    def _prompt_about(self, event: Event) -> str | None:
        if isinstance(event, _ABOUT_THE_NODE):
            return None
        prompt_id = getattr(event, "prompt_id", None)
        if isinstance(event, Unknown) and isinstance(event.data, dict):
            prompt_id = event.data.get("prompt_id")
        if isinstance(prompt_id, str):
            return prompt_id
        if isinstance(event, Executing):
            return None  # the replay after a (re)connection names no prompt: not a new fact
        return self._running

    def _follow_execution(self, event: Event) -> None:
        if isinstance(event, ExecutionStart):
            self._running, self._node = event.prompt_id, None
        elif isinstance(event, Executing) and event.prompt_id == self._running:
            self._node = event.node
            if event.done:
                self._running = None

    def _stored(self, raw: str | bytes, event: Event, prompt_id: str) -> StoredFrame | None:
        received_ms = time.time() * 1000
        if len(raw) > MAX_FRAME_BYTES:
            logger.warning("comfyui frame too large to keep", bytes=len(raw), prompt_id=prompt_id)
            return None
        if isinstance(event, PreviewImageWithMetadata):
            return PreviewFrame(0, received_ms, dict(event.metadata), event.image)
        if isinstance(event, PreviewImage):
            node = self._node or ""
            metadata = _preview_metadata(node, prompt_id, event.mime_type)
            return PreviewFrame(0, received_ms, metadata, event.image)
        if isinstance(event, ProgressText):
            return TextFrame(0, received_ms, event.node_id, event.text)
        return MessageFrame(0, received_ms, raw) if isinstance(raw, str) else None

    def _queue_frame(self, waiting: _Waiting) -> None:
        key = _preview_key(waiting)
        if key is not None and (earlier := self._waiting_previews.get(key)) is not None:
            earlier.frame = waiting.frame  # a newer picture, in the place of the one not sent
            return
        if len(self._queue) >= MAX_QUEUED:
            self._dropped += 1
            if self._dropped == 1:
                logger.warning("comfyui frames dropped: their writer is behind")
            return
        self._queue.append(waiting)
        if key is not None:
            self._waiting_previews[key] = waiting
        self._ready.set()

    # --- the writer ----------------------------------------------------------------------------

    async def run(self, handle: LoopHandle) -> None:
        """The ``comfyui-frames`` loop. A batch that could not be written (Redis away) is
        kept and written when the loop is started again."""
        while True:
            if not self._batch:
                await self._ready.wait()
                self._batch = self._take()
            await self.write(self._batch)
            self._batch = []
            handle.working()

    def _take(self) -> list[_Waiting]:
        batch, self._queue = self._queue[:WRITE_BATCH], self._queue[WRITE_BATCH:]
        if not self._queue:
            self._ready.clear()
        for waiting in batch:
            if (key := _preview_key(waiting)) is not None:
                self._waiting_previews.pop(key, None)
        if self._dropped:
            logger.warning("comfyui frames were dropped", frames=self._dropped)
            self._dropped = 0
        return batch

    async def write(self, batch: list[_Waiting]) -> int:
        """Append a batch to the frames streams of its gateway prompts' tasks; returns how
        many frames were kept."""
        by_task: dict[str, list[dict[str, str]]] = {}
        for waiting in batch:
            prompt = await self._gateway_prompt(waiting.prompt_id)
            if prompt is not None:
                frame = _for_task(waiting.frame, waiting.prompt_id, prompt)
                by_task.setdefault(prompt.task_id, []).append(to_fields(frame))
        if by_task:
            await self._store.append_frames(by_task)
        return sum(len(entries) for entries in by_task.values())

    async def _gateway_prompt(self, prompt_id: str) -> Prompt | None:
        """The prompt, if this node follows it and its frames have an audience: its task
        came through the gateway, or asked for previews."""
        if prompt_id in self._tasks:
            self._tasks.move_to_end(prompt_id)
            return self._tasks[prompt_id]
        prompt = await self._prompts.find(prompt_id)
        if prompt is not None and not await self._has_audience(prompt.task_id):
            prompt = None
        self._tasks[prompt_id] = prompt
        if len(self._tasks) > KNOWN_PROMPTS:
            self._tasks.popitem(last=False)
        return prompt

    async def _has_audience(self, task_id: str) -> bool:
        if await self._redis.exists(self._keys.task_origin(task_id)):
            return True
        record = await self._store.find(task_id)
        return record is not None and record.previews


def _preview_key(waiting: _Waiting) -> tuple[str, str] | None:
    """Previews of one prompt and node replace each other while they wait."""
    if not isinstance(waiting.frame, PreviewFrame):
        return None
    return waiting.prompt_id, str(waiting.frame.metadata.get("node_id"))


def _preview_metadata(node: str, prompt_id: str, media_type: str) -> dict[str, Any]:
    """What a type-4 preview says, for a type-1 preview (which says nothing)."""
    return {
        "node_id": node,
        "display_node_id": node,
        "parent_node_id": None,
        "real_node_id": node,
        "prompt_id": prompt_id,
        "image_type": media_type,
    }


def _for_task(frame: StoredFrame, prompt_id: str, prompt: Prompt) -> StoredFrame:
    """The frame as the task's: its attempt, and the task id wherever the prompt id was."""
    attempt, task_id = prompt.attempt.number, prompt.task_id
    if isinstance(frame, MessageFrame):
        text = frame.text
        if prompt_id != task_id:
            text = json.dumps(_renamed(json.loads(text), prompt_id, task_id))
        return replace(frame, attempt=attempt, text=text)
    if isinstance(frame, PreviewFrame):
        metadata = _renamed(frame.metadata, prompt_id, task_id)
        return replace(frame, attempt=attempt, metadata=metadata)
    return replace(frame, attempt=attempt)


def _renamed(value: Any, old: str, new: str) -> Any:
    """``value`` with every string equal to ``old`` replaced by ``new``, at any depth (a
    ``progress_state`` names its prompt in every node, a custom message wherever it likes)."""
    if isinstance(value, str):
        return new if value == old else value
    if isinstance(value, dict):
        return {key: _renamed(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, old, new) for item in value]
    return value
