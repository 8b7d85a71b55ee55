"""The output store in a directory: the default (a local folder under ``./dev up``, a named
volume shared by the services and the balancer under docker-compose).

A blob is written to a temporary file beside its final place, flushed to disk, then renamed:
a reader never sees half a file, and a crash leaves at most a temporary file. Every process
of a deployment writes into the same directory, so a process that starts removes only
temporary files older than :data:`STALE_PARTIAL_S` (a crash's), never one another process
is writing. File I/O runs in threads so the event loop never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from comfy_shared.outputs.store import (
    BlobMissing,
    ByteRange,
    Digester,
    StoredBlob,
    StoreUnavailable,
    blob_key,
    manifest_key,
)

READ_CHUNK_BYTES = 1 << 20
STALE_PARTIAL_S = 3600


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._partial = root / "partial"

    async def open(self) -> None:
        """Create the layout and drop what a crash left half-written."""
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        try:
            (self.root / "blobs").mkdir(parents=True, exist_ok=True)
            (self.root / "manifests").mkdir(exist_ok=True)
            self._partial.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"output directory {self.root}: {exc}") from exc
        stale_before = time.time() - STALE_PARTIAL_S
        for leftover in self._partial.iterdir():
            with contextlib.suppress(FileNotFoundError):  # its writer finished meanwhile
                if leftover.stat().st_mtime < stale_before:
                    leftover.unlink()

    async def put(self, chunks: AsyncIterator[bytes]) -> StoredBlob:
        partial = self._partial / uuid.uuid4().hex
        digester = Digester()
        try:
            file = await asyncio.to_thread(partial.open, "wb")
            try:
                async for chunk in chunks:
                    digester.update(chunk)
                    await asyncio.to_thread(file.write, chunk)
                await asyncio.to_thread(_flush_to_disk, file)
            finally:
                file.close()
            blob = digester.blob()
            await asyncio.to_thread(self._settle, partial, self.root / blob_key(blob.digest))
        except OSError as exc:
            raise StoreUnavailable(f"output directory {self.root}: {exc}") from exc
        finally:
            await asyncio.to_thread(partial.unlink, True)
        return blob

    @staticmethod
    def _settle(partial: Path, final: Path) -> None:
        if final.exists():
            return  # the same bytes are there already
        final.parent.mkdir(exist_ok=True)
        partial.replace(final)

    async def size_of(self, digest: str) -> int:
        try:
            return (await asyncio.to_thread((self.root / blob_key(digest)).stat)).st_size
        except FileNotFoundError as exc:
            raise BlobMissing(digest) from exc

    async def read(self, digest: str, span: ByteRange | None = None) -> AsyncIterator[bytes]:
        try:
            file = await asyncio.to_thread((self.root / blob_key(digest)).open, "rb")
        except FileNotFoundError as exc:
            raise BlobMissing(digest) from exc
        try:
            left = span.length if span else None
            if span:
                await asyncio.to_thread(file.seek, span.start)
            while left is None or left > 0:
                size = READ_CHUNK_BYTES if left is None else min(left, READ_CHUNK_BYTES)
                chunk = await asyncio.to_thread(file.read, size)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def delete(self, digest: str) -> None:
        await asyncio.to_thread((self.root / blob_key(digest)).unlink, True)

    async def put_manifest(self, task_id: str, manifest: bytes) -> None:
        final = self.root / manifest_key(task_id)
        partial = self._partial / f"{uuid.uuid4().hex}.json"
        try:
            await asyncio.to_thread(_write_whole, partial, manifest)
            await asyncio.to_thread(partial.replace, final)
        except OSError as exc:
            raise StoreUnavailable(f"output directory {self.root}: {exc}") from exc

    async def read_manifest(self, task_id: str) -> bytes | None:
        try:
            return await asyncio.to_thread((self.root / manifest_key(task_id)).read_bytes)
        except FileNotFoundError:
            return None

    async def delete_manifest(self, task_id: str) -> None:
        await asyncio.to_thread((self.root / manifest_key(task_id)).unlink, True)

    async def presigned_url(
        self, digest: str, *, filename: str, media_type: str, expires_s: int
    ) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def _flush_to_disk(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _write_whole(path: Path, data: bytes) -> None:
    with path.open("wb") as file:
        file.write(data)
        _flush_to_disk(file)
