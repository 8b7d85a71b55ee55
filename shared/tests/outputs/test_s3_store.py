"""What only the S3 store does, against a real S3-compatible server over HTTP (moto's server
mode in its own process): its keys, its uploads, presigned URLs, and how a bucket that cannot
be used fails."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from comfy_shared.outputs.s3_store import S3Settings, S3Store
from comfy_shared.outputs.store import (
    StoreUnavailable,
    attachment_disposition,
    blob_key,
    manifest_key,
)
from comfy_stack.ports import free_port
from comfy_testkit.s3 import S3Server, start_s3_server

FAILURE_BOUND_S = 10.0
"""A store that cannot be used must say so well within this (it must never hang)."""


async def chunks_of(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: S3Store, digest: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(digest)])


async def stored_keys(store: S3Store) -> set[str]:
    listing = await store.client.list_objects_v2(Bucket=store.bucket)
    return {item["Key"] for item in listing.get("Contents", [])}


def count_calls(store: S3Store, operation: str) -> list[str]:
    """Records each ``operation`` request the store's client is about to send."""
    calls: list[str] = []

    def record(**_: Any) -> None:
        calls.append(operation)

    store.client.meta.events.register(f"before-call.s3.{operation}", record)
    return calls


async def test_blobs_and_manifests_are_kept_under_the_prefix_in_the_store_layout(
    s3_store: S3Store,
) -> None:
    blob = await s3_store.put(chunks_of(b"a picture"))
    await s3_store.put_manifest("t-1", b"{}")

    assert await stored_keys(s3_store) == {
        f"outputs/{blob_key(blob.digest)}",
        f"outputs/{manifest_key('t-1')}",
    }
    assert blob_key(blob.digest) == f"blobs/{blob.digest[:2]}/{blob.digest}"


async def test_bytes_already_in_the_bucket_are_not_uploaded_again(s3_store: S3Store) -> None:
    puts = count_calls(s3_store, "PutObject")
    heads = count_calls(s3_store, "HeadObject")

    first = await s3_store.put(chunks_of(b"same bytes"))
    again = await s3_store.put(chunks_of(b"same bytes"))

    assert first == again
    assert (len(heads), len(puts)) == (2, 1)


async def test_uploads_carry_no_checksum_that_s3_compatible_servers_refuse(
    s3_store: S3Store,
) -> None:
    sent: list[dict[str, str]] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append({name.lower(): _text(value) for name, value in request.headers.items()})

    s3_store.client.meta.events.register("before-send.s3.PutObject", capture)
    await s3_store.put(chunks_of(b"an upload"))
    await s3_store.put_manifest("t-1", b"{}")

    assert len(sent) == 2
    for headers in sent:
        assert not [name for name in headers if "checksum" in name], headers
        assert "aws-chunked" not in headers.get("content-encoding", "")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_a_blob_larger_than_a_part_goes_up_in_parts_and_reads_back_whole(
    s3_settings: S3Settings, aio_session: AioSession, s3_store: S3Store
) -> None:
    part_bytes = 5 << 20  # the smallest part S3 takes
    store = S3Store(dataclasses.replace(s3_settings, part_bytes=part_bytes), session=aio_session)
    await store.open()
    try:
        parts = count_calls(store, "UploadPart")
        data = os.urandom(2 * part_bytes + 17)

        blob = await store.put(chunks_of(data))

        head = await store.client.head_object(
            Bucket=store.bucket, Key=store.key(blob_key(blob.digest))
        )
        assert len(parts) == 3
        assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a 3-part upload
        assert blob.digest == hashlib.sha256(data).hexdigest()
        assert await read_all(store, blob.digest) == data
    finally:
        await store.aclose()


@pytest.mark.parametrize("filename", ["ComfyUI_00001_.png", 'été "final".png'])
async def test_a_presigned_url_downloads_the_bytes_with_their_type_and_name(
    s3_store: S3Store, filename: str
) -> None:
    data = os.urandom(70_000)
    blob = await s3_store.put(chunks_of(data))

    url = await s3_store.presigned_url(
        blob.digest, filename=filename, media_type="image/png", expires_s=300
    )

    assert url is not None
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == attachment_disposition(filename)


async def test_a_presigned_url_is_signed_with_sigv4_for_the_time_asked(
    s3_store: S3Store,
) -> None:
    blob = await s3_store.put(chunks_of(b"private"))
    url = await s3_store.presigned_url(
        blob.digest, filename="a.png", media_type="image/png", expires_s=300
    )
    assert url is not None
    query = dict(httpx.URL(url).params)
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "300"
    assert query["X-Amz-Credential"].startswith(f"{s3_store.settings.access_key_id}/")


Operation = Callable[[S3Store], Awaitable[object]]
DIGEST = "0" * 64
EVERY_OPERATION: dict[str, Operation] = {
    "put": lambda store: store.put(chunks_of(b"x")),
    "size_of": lambda store: store.size_of(DIGEST),
    "read": lambda store: read_all(store, DIGEST),
    "delete": lambda store: store.delete(DIGEST),
    "put_manifest": lambda store: store.put_manifest("t-1", b"{}"),
    "read_manifest": lambda store: store.read_manifest("t-1"),
    "delete_manifest": lambda store: store.delete_manifest("t-1"),
}


async def assert_unavailable_quickly(store: S3Store, operation: Operation) -> BaseException:
    """Returns what the store's error was raised from."""
    async with asyncio.timeout(FAILURE_BOUND_S):
        with pytest.raises(StoreUnavailable) as raised:
            await operation(store)
    assert raised.value.__cause__ is not None
    return raised.value.__cause__


@pytest.mark.parametrize("operation", EVERY_OPERATION.values(), ids=EVERY_OPERATION.keys())
async def test_an_endpoint_that_refuses_connections_makes_the_store_unavailable(
    s3_settings: S3Settings, aio_session: AioSession, operation: Operation
) -> None:
    refused = dataclasses.replace(
        s3_settings, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1
    )
    store = S3Store(refused, session=aio_session)
    await store.open()
    try:
        await assert_unavailable_quickly(store, operation)
    finally:
        await store.aclose()


async def test_an_endpoint_that_never_answers_times_out_as_unavailable(
    s3_settings: S3Settings, aio_session: AioSession
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def hold_without_answering(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold_without_answering, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = dataclasses.replace(
        s3_settings, endpoint_url=f"http://127.0.0.1:{port}", read_timeout_s=0.5, max_attempts=1
    )
    store = S3Store(silent, session=aio_session)
    await store.open()
    try:
        await assert_unavailable_quickly(store, EVERY_OPERATION["read_manifest"])
        assert held  # the request did reach the server, which kept quiet
    finally:
        await store.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("operation", EVERY_OPERATION.values(), ids=EVERY_OPERATION.keys())
async def test_a_missing_bucket_makes_the_store_unavailable_not_empty(
    s3_settings: S3Settings, aio_session: AioSession, operation: Operation
) -> None:
    store = S3Store(s3_settings, session=aio_session)  # its bucket was never made
    await store.open()
    try:
        await assert_unavailable_quickly(store, operation)
    finally:
        await store.aclose()


@pytest.fixture(scope="module")
def strict_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A second server, which refuses every credential (it knows none)."""
    server = start_s3_server(tmp_path_factory.mktemp("strict-s3"), enforce_credentials=True)
    yield server
    server.stop()


@pytest.mark.parametrize("operation", EVERY_OPERATION.values(), ids=EVERY_OPERATION.keys())
async def test_credentials_the_server_does_not_know_make_the_store_unavailable(
    s3_settings: S3Settings,
    aio_session: AioSession,
    strict_s3_server: S3Server,
    operation: Operation,
) -> None:
    strict = dataclasses.replace(s3_settings, endpoint_url=strict_s3_server.url)
    store = S3Store(strict, session=aio_session)
    await store.open()
    try:
        cause = await assert_unavailable_quickly(store, operation)
        assert isinstance(cause, ClientError)
        assert cause.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        await store.aclose()


async def test_a_store_used_before_it_is_opened_says_so(s3_settings: S3Settings) -> None:
    with pytest.raises(RuntimeError, match="before open"):
        await S3Store(s3_settings).size_of(DIGEST)
