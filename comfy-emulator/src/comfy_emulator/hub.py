"""WebSocket registry and the ordered outbound message queue.

ComfyUI's worker thread never writes to sockets itself: `send_sync` puts `(event, data, sid)` on a
queue and one publisher coroutine sends them in order. The emulator keeps that shape so events
reach clients in exactly the order they were produced, and a slow socket never stalls the
worker. `sid=None` broadcasts; a sid without an open socket drops the message (nothing is
buffered, as in ComfyUI).

Binary events use ComfyUI's framing: a 4-byte big-endian event type, then the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from comfy_emulator.logbuffer import LogBuffer

# Binary event types (ComfyUI protocol.py BinaryEventTypes).
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

_SEND_ERRORS = (aiohttp.ClientError, ConnectionError, RuntimeError)

Event = str | int


@dataclass
class Connection:
    """One open WebSocket and what the client told us in the feature-flag handshake."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    feature_flags: dict[str, Any] = field(default_factory=dict)


class SocketHub:
    """Open sockets by sid, plus the publisher that drains the outbound queue."""

    def __init__(self, logs: LogBuffer) -> None:
        self.connections: dict[str, Connection] = {}
        self._logs = logs
        self._queue: asyncio.Queue[tuple[Event, Any, str | None]] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._publisher = asyncio.create_task(self._publish_forever(), name="ws-publisher")

    async def stop(self, close_code: int = aiohttp.WSCloseCode.GOING_AWAY) -> None:
        """Stop publishing and close every socket (what a process exit looks like)."""
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        await self.close_all(close_code)

    def emit(self, event: Event, data: Any, sid: str | None = None) -> None:
        """Queue a message; `sid=None` broadcasts. Never blocks."""
        self._queue.put_nowait((event, data, sid))

    def emit_text(self, node_id: str, text: str, sid: str | None = None) -> None:
        """A TEXT binary frame (`send_progress_text`): node id length, node id, UTF-8 text."""
        node = node_id.encode()
        self.emit(TEXT, struct.pack(">I", len(node)) + node + text.encode(), sid)

    def supports(self, sid: str | None, flag: str) -> bool:
        conn = self.connections.get(sid) if sid is not None else None
        return bool(conn and conn.feature_flags.get(flag, False))

    async def send_now(self, event: Event, data: Any, sid: str | None) -> None:
        """Send immediately, bypassing the queue (the handshake frames do this in ComfyUI)."""
        targets = self._targets(sid)
        if isinstance(data, bytes | bytearray):
            frame = struct.pack(">I", int(event)) + bytes(data)
            for conn in targets:
                await self._safe_send(conn, conn.ws.send_bytes(frame))
            return
        text = json.dumps({"type": event, "data": data})
        for conn in targets:
            await self._safe_send(conn, conn.ws.send_str(text))

    async def close_all(self, code: int = aiohttp.WSCloseCode.GOING_AWAY) -> None:
        for conn in list(self.connections.values()):
            with contextlib.suppress(*_SEND_ERRORS):
                await conn.ws.close(code=code, message=b"emulator")

    def abort_all(self) -> None:
        """Cut every socket's TCP connection without a close frame (a network failure)."""
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()

    def clear_pending(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def wait_drained(self) -> None:
        """Wait until every queued message has been handed to the sockets."""
        await self._queue.join()

    def _targets(self, sid: str | None) -> list[Connection]:
        if sid is None:
            return list(self.connections.values())
        conn = self.connections.get(sid)
        return [conn] if conn is not None else []

    async def _publish_forever(self) -> None:
        while True:
            event, data, sid = await self._queue.get()
            try:
                await self.send_now(event, data, sid)
            finally:
                self._queue.task_done()
            # A send to a dying socket fails without yielding, and its "send error" line is
            # itself a message for log subscribers: without this the loop would never let the
            # socket's handler run and drop the connection.
            await asyncio.sleep(0)

    async def _safe_send(self, conn: Connection, send: Awaitable[None]) -> None:
        try:
            await send
        except _SEND_ERRORS as err:
            # The socket is dead; its handler would drop it soon. Dropping it now sends it
            # nothing more (not even this line, for a client subscribed to the logs).
            for sid, known in list(self.connections.items()):
                if known is conn:
                    del self.connections[sid]
            self._logs.log(f"send error: {err}")
