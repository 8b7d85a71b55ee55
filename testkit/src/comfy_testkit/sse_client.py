"""A light Server-Sent Events client on raw asyncio streams, for holding hundreds of streams
from one test or benchmark process (an HTTP library's client per stream costs far more).

It speaks just what our servers send: HTTP/1.1, a chunked body of SSE frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from comfy_testkit.stack import AUTH_HEADERS


@dataclass(frozen=True)
class SseFrame:
    """One frame: an event (``id``, ``event``, ``data`` parsed from JSON) or a comment."""

    id: str | None
    event: str | None
    data: dict[str, Any] | None
    comment: str | None

    @property
    def is_event(self) -> bool:
        return self.data is not None


class RawSseStream:
    """One open ``GET`` of an event stream. Use :meth:`open`, then :meth:`next_frame`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.status = status
        self.headers = headers
        self._buffer = ""
        self._ended = False

    @classmethod
    async def open(
        cls,
        base_url: str,
        path: str,
        *,
        last_event_id: str | None = None,
        headers: Mapping[str, str] = AUTH_HEADERS,
    ) -> RawSseStream:
        """Connect and send the request; returns once the status line and headers are in."""
        url = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
        sent = {**headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        extra = "".join(f"{name}: {value}\r\n" for name, value in sent.items())
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        writer.write(request.encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        answered = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name:
                answered[name.strip().lower()] = value.strip()
        return cls(reader, writer, status, answered)

    async def body(self) -> str:
        """The whole body of a response that is not a stream (an error answer)."""
        length = int(self.headers.get("content-length", "0"))
        return (await self._reader.readexactly(length)).decode()

    async def next_frame(self) -> SseFrame | None:
        """The next frame, or None once the server ended the stream."""
        while "\n\n" not in self._buffer:
            if self._ended or not await self._read_chunk():
                return None
        frame, _, self._buffer = self._buffer.partition("\n\n")
        return _parse(frame)

    async def next_event(self) -> SseFrame | None:
        """The next event frame (comments skipped), or None at the end of the stream."""
        while (frame := await self.next_frame()) is not None:
            if frame.is_event:
                return frame
        return None

    async def _read_chunk(self) -> bool:
        size = int((await self._reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            self._ended = True
            return False
        data = await self._reader.readexactly(size + 2)  # the chunk and its CRLF
        self._buffer += data[:-2].decode()
        return True

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):  # the server may have closed first
            await self._writer.wait_closed()


def _parse(frame: str) -> SseFrame:
    fields: dict[str, str] = {}
    comment = None
    for line in frame.split("\n"):
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        key, _, value = line.partition(": ")
        fields[key] = value
    data = json.loads(fields["data"]) if "data" in fields else None
    return SseFrame(fields.get("id"), fields.get("event"), data, comment)
