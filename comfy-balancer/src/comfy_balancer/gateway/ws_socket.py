"""One client's WebSocket at the gateway: who it is, what waits to be sent, and its writer.

Frames for a client are queued without waiting (the relay never waits on a socket), and one
writer per socket sends them in order. A slow client never slows the others; what it costs
is bounded:

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


class ClientSocket:
    """A socket's identity (``tenant``: the caller's; ``client_id``: its sid) and outbox."""

    def __init__(self, tenant: str, client_id: str, *, queue_frames: int = QUEUE_FRAMES) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.wants_metadata = False
        """Announced ``supports_preview_metadata``: previews come as type 4, else type 1."""
        self.previews_dropped = 0
        self.kicked = asyncio.Event()
        """Set when the client fell ``queue_frames`` behind: it is closed, not fed any more."""
        self._queue: deque[Frame] = deque()
        self._queue_frames = queue_frames
        self._ready = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, frame: Frame) -> None:
        """Queue a frame; never waits."""
        if self.kicked.is_set():
            return
        if len(self._queue) >= self._queue_frames:
            self._queue.clear()
            self.kicked.set()
            return
        self._queue.append(frame)
        self._ready.set()

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
                frame = self._queue.popleft()
                if isinstance(frame, str):
                    await websocket.send_text(frame)
                else:
                    await websocket.send_bytes(frame)
            self._ready.clear()


async def close_too_slow(websocket: WebSocket) -> None:
    """Close a client that fell behind; its connection may be stuck (a full TCP window), so
    the close handshake is not waited for long."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(TOO_SLOW, "too slow: fell behind the events")
