"""What every output store does, run against each backend (the ``store`` fixture of
conftest.py)."""

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfy_shared.outputs.file_store import STALE_PARTIAL_S, FileStore
from comfy_shared.outputs.store import BlobMissing, ByteRange, OutputStore


async def chunks_of(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: OutputStore, digest: str, span: ByteRange | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(digest, span)])


async def test_bytes_come_back_by_their_sha256_and_identical_bytes_are_one_blob(
    store: OutputStore,
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)  # more than one read chunk

    first = await store.put(chunks_of(data))
    again = await store.put(chunks_of(data, size=65536))

    assert first == again
    assert (first.digest, first.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert await store.size_of(first.digest) == len(data)
    assert await read_all(store, first.digest) == data


@pytest.mark.parametrize(("start", "end"), [(0, 0), (5, 9), (0, 99), (90, 99)])
async def test_a_range_reads_exactly_its_bytes(store: OutputStore, start: int, end: int) -> None:
    data = bytes(range(100))
    blob = await store.put(chunks_of(data, size=13))
    assert await read_all(store, blob.digest, ByteRange(start, end)) == data[start : end + 1]


async def test_a_deleted_blob_is_missing_and_deleting_twice_is_fine(store: OutputStore) -> None:
    blob = await store.put(chunks_of(b"gone soon"))
    await store.delete(blob.digest)
    await store.delete(blob.digest)
    with pytest.raises(BlobMissing):
        await store.size_of(blob.digest)
    with pytest.raises(BlobMissing):
        await read_all(store, blob.digest)


async def test_an_empty_output_is_stored_too(store: OutputStore) -> None:
    blob = await store.put(chunks_of(b""))
    assert (blob.size, await read_all(store, blob.digest)) == (0, b"")


async def test_manifests_are_written_and_removed(store: OutputStore) -> None:
    await store.put_manifest("t-1", b'{"outputs": []}')
    await store.put_manifest("t-1", b'{"outputs": [1]}')
    assert await store.read_manifest("t-1") == b'{"outputs": [1]}'
    await store.delete_manifest("t-1")
    await store.delete_manifest("t-1")
    assert await store.read_manifest("t-1") is None


async def test_a_range_that_starts_past_the_end_reads_nothing(store: OutputStore) -> None:
    blob = await store.put(chunks_of(b"short"))
    assert await read_all(store, blob.digest, ByteRange(5, 9)) == b""


async def test_a_digest_that_is_not_sha256_is_refused(store: OutputStore) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        await store.size_of("../../etc/passwd")


async def test_a_file_store_drops_what_a_crash_left_half_written_and_nothing_else(
    tmp_path: Path,
) -> None:
    root = tmp_path / "outputs"
    await FileStore(root).open()
    crashed, writing = root / "partial" / "crashed", root / "partial" / "writing"
    crashed.write_bytes(b"half")
    old = time.time() - STALE_PARTIAL_S - 1
    os.utime(crashed, (old, old))
    writing.write_bytes(b"another process is at it")

    await FileStore(root).open()  # another process of the deployment starts

    assert list((root / "partial").iterdir()) == [writing]
