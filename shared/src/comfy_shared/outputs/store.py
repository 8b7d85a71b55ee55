"""Where finished tasks' outputs live, apart from the node that made them.

Content-addressed: a file is stored under the SHA-256 of its bytes, so identical outputs (the
same seed run twice, an image shared by many tasks) are stored once. Each task also gets a
manifest (its outputs' digests, names and media types) beside the blobs, so what a task made
can be found from the store alone. Which tasks still use a blob is Redis's to know
(``comfy_shared.outputs.catalog``): a store only keeps bytes.

Layout under the root (a directory, or a bucket and prefix):
``blobs/<first two hex digits>/<sha256>`` and ``manifests/<task id>.json``.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class BlobMissing(Exception):
    """The store has no blob of that digest (deleted by retention, or never stored)."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"no stored output with sha256 {digest}")
        self.digest = digest


class StoreUnavailable(Exception):
    """The store could not be reached or written (a full disk, a refused credential)."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: str
    """SHA-256 of the bytes, lower-case hex."""
    size: int


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive, as HTTP ranges count them."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class OutputStore(Protocol):
    """Bytes by digest, and one manifest per task. Implementations: ``FileStore``,
    ``S3Store``; both pass the same conformance tests."""

    async def put(self, chunks: AsyncIterator[bytes]) -> StoredBlob:
        """Store the bytes ``chunks`` yield; bytes already stored are not written twice.
        Raises :class:`StoreUnavailable`."""
        ...

    async def size_of(self, digest: str) -> int:
        """Raises :class:`BlobMissing`."""
        ...

    def read(self, digest: str, span: ByteRange | None = None) -> AsyncIterator[bytes]:
        """The blob's bytes (``span`` of them). Raises :class:`BlobMissing` on the first
        iteration when there is no such blob."""
        ...

    async def delete(self, digest: str) -> None:
        """Gone, or never there: both fine."""
        ...

    async def put_manifest(self, task_id: str, manifest: bytes) -> None: ...

    async def read_manifest(self, task_id: str) -> bytes | None: ...

    async def delete_manifest(self, task_id: str) -> None: ...

    async def presigned_url(
        self, digest: str, *, filename: str, media_type: str, expires_s: int
    ) -> str | None:
        """A URL a client can download the blob from directly, or None when the store has
        none (a directory)."""
        ...

    async def aclose(self) -> None: ...


def blob_key(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"blobs/{digest[:2]}/{digest}"


def manifest_key(task_id: str) -> str:
    return f"manifests/{task_id}.json"


def attachment_disposition(filename: str) -> str:
    """A ``Content-Disposition`` that downloads as ``filename``: an ASCII fallback with quotes
    and backslashes replaced (they would end or escape the quoted string), plus the exact
    name in RFC 5987 form when the fallback had to change it."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    disposition = f'attachment; filename="{fallback}"'
    if fallback != filename:
        disposition += f"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"
    return disposition


class Digester:
    """SHA-256 and size of bytes as they stream past."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def blob(self) -> StoredBlob:
        return StoredBlob(self._hash.hexdigest(), self.size)
