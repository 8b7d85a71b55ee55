"""One client's WebSocket at the gateway: who it is, what waits to be sent, and its writer.

Frames for a client are queued without waiting (the relay never waits on a socket), and one
writer per socket sends them in order. A slow client never slows the others; what it costs
is bounded:

- a ``status`` that only tells the user's queue (not part of a prompt's end) replaces the one
  still waiting to be sent, if any: when fifty prompts start at once, a client is told the
  queue once, with the newest count, not fifty times;
- previews (lossy by nature: each replaces the last) are dropped for a client whose queue is
  half full;
- a client whose queue is full (``--ws-queue-frames``, 1024) is **closed** (code 1013, "try again
  later") rather than fed with gaps: ComfyUI clients wait for one particular frame (their
  prompt's ``executing {node: null}``), and silently losing it would hang them, while a closed
  socket makes them reconnect and read ``/history``, as after any network trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final

from starlette.websockets import WebSocket

QUEUE_FRAMES: Final = 1024
"""Frames waiting for one client at most, by default (``--ws-queue-frames``); a prompt's
whole sequence is a few hundred."""
TOO_SLOW: Final = 1013
"""Close code for a client that could not keep up (RFC 6455: try again later)."""
CLOSE_TIMEOUT_S: Final = 1.0

Frame = str | bytes


class _QueueNotice:
    """A ``status`` waiting in the queue that a newer one may still replace."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class ClientSocket:
    """A socket's identity (``tenant``: the caller's; ``client_id``: its sid) and outbox."""

    def __init__(self, tenant: str, client_id: str, *, queue_frames: int = QUEUE_FRAMES) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.wants_metadata = False
        """Announced ``supports_preview_metadata``: previews come as type 4, else type 1."""
        self.wants_places = False
        """Announced feature flags, as the frontend does: it is told its waiting prompts'
        places as texts. Scripts send none, and some take every binary frame for an image."""
        self.previews_dropped = 0
        self.kicked = asyncio.Event()
        """Set when the client fell ``queue_frames`` behind: it is closed, not fed any more."""
        self._queue: deque[Frame | _QueueNotice] = deque()
        self._queue_frames = queue_frames
        self._ready = asyncio.Event()
        self._notice: _QueueNotice | None = None  # the one in the queue, not sent yet

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, frame: Frame) -> None:
        """Queue a frame; never waits."""
        self._enqueue(frame)

    def send_status(self, status: str) -> None:
        """Queue a ``status`` in its place among the other frames (say, between a prompt's end
        and its ``executing {node: null}``). A later notice comes after it, never before:
        the client's last word on the queue is always the newest."""
        self._notice = None
        self._enqueue(status)

    def send_queue_notice(self, status: str) -> None:
        """Queue a ``status`` about the user's queue, or put it in the place of the one that
        waits to be sent."""
        if self._notice is not None:
            self._notice.text = status
            return
        notice = _QueueNotice(status)
        if self._enqueue(notice):
            self._notice = notice

    def _enqueue(self, item: Frame | _QueueNotice) -> bool:
        if self.kicked.is_set():
            return False
        if len(self._queue) >= self._queue_frames:
            self._queue.clear()
            self._notice = None
            self.kicked.set()
            return False
        self._queue.append(item)
        self._ready.set()
        return True

    def send_preview(self, with_metadata: bytes, plain: bytes | None) -> None:
        """Queue a preview in the form the client asked for (type 4 or type 1), unless its
        queue is half full."""
        frame = with_metadata if self.wants_metadata else plain
        if frame is None:
            return
        if len(self._queue) >= self._queue_frames // 2:
            self.previews_dropped += 1
            return
        self.send(frame)

    async def write_to(self, websocket: WebSocket) -> None:
        """Send queued frames in order, until cancelled."""
        while True:
            await self._ready.wait()
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, _QueueNotice):
                    self._notice = None
                    item = item.text
                if isinstance(item, str):
                    await websocket.send_text(item)
                else:
                    await websocket.send_bytes(item)
            self._ready.clear()


async def close_too_slow(websocket: WebSocket) -> None:
    """Close a client that fell behind; its connection may be stuck (a full TCP window), so
    the close handshake is not waited for long."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(TOO_SLOW, "too slow: fell behind the events")
