"""Answering a download of a stored output: ``ETag`` (its sha256), conditional requests, one
byte range, its media type and file name. Both APIs serve outputs this way, and a text output
that was never stored (a failed task's) from the text its record keeps."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response, StreamingResponse

from comfy_shared.errors import ComfyStackError
from comfy_shared.models import TaskOutput, TaskRecord
from comfy_shared.outputs.store import (
    BlobMissing,
    ByteRange,
    OutputStore,
    attachment_disposition,
)
from comfy_shared.outputs.texts import text_bytes

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class OutputNotFound(ComfyStackError):
    def __init__(self, task_id: str, index: int) -> None:
        super().__init__(f"task {task_id!r} has no output number {index}")


class OutputExpired(ComfyStackError):
    def __init__(self, task_id: str, index: int) -> None:
        super().__init__(
            f"output {index} of task {task_id!r} is gone: its retention ended or it was deleted"
        )


class RangeNotSatisfiable(ComfyStackError):
    def __init__(self, size: int) -> None:
        super().__init__(f"the range asked for lies outside the output's {size} bytes")
        self.size = size


def output_at(record: TaskRecord, index: int) -> TaskOutput:
    if not 0 <= index < len(record.outputs):
        raise OutputNotFound(record.id, index)
    return record.outputs[index]


def content_range_header(exc: RangeNotSatisfiable) -> dict[str, str]:
    return {"Content-Range": f"bytes */{exc.size}"}


async def serve_stored(
    store: OutputStore,
    task_id: str,
    index: int,
    output: TaskOutput,
    request_headers: Mapping[str, str],
) -> Response:
    """The stored bytes of ``output``; raises :class:`OutputExpired` when they are gone."""
    digest = output.sha256
    if digest is None:
        raise ValueError("the output was never stored")
    try:
        size = output.size if output.size is not None else await store.size_of(digest)
    except BlobMissing:
        raise OutputExpired(task_id, index) from None
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=31536000, immutable",  # the bytes never change
        "Content-Disposition": attachment_disposition(output.filename),
    }
    if _tags(request_headers.get("if-none-match", "")) & {etag, "*"}:
        return Response(status_code=304, headers=headers)
    span = None
    if request_headers.get("if-range", etag) == etag:
        span = byte_range(request_headers.get("range"), size)
    body = store.read(digest, span)
    try:
        first = await anext(body)
    except StopAsyncIteration:
        first = b""
    except BlobMissing:
        raise OutputExpired(task_id, index) from None
    if span is None:
        headers["Content-Length"] = str(size)
        status = 200
    else:
        headers["Content-Length"] = str(span.length)
        headers["Content-Range"] = f"bytes {span.start}-{span.end}/{size}"
        status = 206
    return StreamingResponse(
        _prepend(first, body),
        status_code=status,
        media_type=output.media_type,
        headers=headers,
    )


def serve_unstored_text(task_id: str, index: int, output: TaskOutput) -> Response:
    """A text output not in the store, from the text its record carries; raises
    :class:`OutputExpired` when it carries none (it is never fetched from ComfyUI)."""
    if output.text is None:
        raise OutputExpired(task_id, index)
    return Response(
        text_bytes(output),
        media_type=output.media_type,
        headers={"Content-Disposition": attachment_disposition(output.filename)},
    )


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """The single range a ``Range`` header asks for, clamped to the size; None for the whole
    file (no header, a unit other than bytes, or several ranges: answered whole, which HTTP
    allows). Raises :class:`RangeNotSatisfiable`."""
    if header is None:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - int(last)), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(size)
    return ByteRange(start, end)


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
