"""The output store in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, ...), under a
key prefix, with the same layout as a directory.

A put first spools the bytes to a temporary file while hashing them (they are in memory only
up to :data:`SPOOL_MEMORY_BYTES`), because the object's key is the digest, known only at the
end. A blob already in the bucket is not uploaded again. Larger blobs go up in parts of
:data:`PART_BYTES`, so no more than one part is ever held in memory.

Errors are mapped at this boundary: a missing object is :class:`BlobMissing` (or no manifest),
anything else the bucket or the network answers (refused connection, timeout, wrong credential,
no such bucket) is :class:`StoreUnavailable`. Retries and timeouts are botocore's, bounded by
the settings, so a dead endpoint fails within seconds instead of hanging.

The credentials need s3:GetObject, s3:PutObject and s3:DeleteObject on the prefix, and
s3:ListBucket on the bucket: without it AWS answers a missing key with 403, not 404, and
every new blob would look like an unavailable store.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Literal, NoReturn

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from comfy_shared.outputs.store import (
    BlobMissing,
    ByteRange,
    Digester,
    StoredBlob,
    StoreUnavailable,
    attachment_disposition,
    blob_key,
    manifest_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

SPOOL_MEMORY_BYTES = 8 << 20
"""A put keeps this much in memory; beyond it the spool is a temporary file on disk."""
PART_BYTES = 8 << 20
"""Blobs larger than one part go up as a multipart upload (S3 wants parts of 5 MiB or more)."""
READ_CHUNK_BYTES = 1 << 20

AddressingStyle = Literal["auto", "virtual", "path"]

_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError)
"""What botocore and its HTTP client raise when the endpoint cannot be talked to."""
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    """Keys start with it; a trailing slash is added when missing (``outputs`` -> ``outputs/``)."""
    endpoint_url: str | None = None
    """None: AWS itself; otherwise MinIO, R2 or any S3-compatible server."""
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    """None for both: botocore's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    ~/.aws, an instance role)."""
    addressing_style: AddressingStyle = "auto"
    """``path`` for most self-hosted servers (MinIO), ``virtual`` for buckets in hostnames."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 3
    """Per request, the first try included (botocore's standard retry mode)."""
    part_bytes: int = PART_BYTES


class S3Store:
    def __init__(self, settings: S3Settings, *, session: AioSession | None = None) -> None:
        """``session``: share one between stores to load botocore's S3 model once (tests)."""
        self.settings = settings
        self._session = session or get_session()
        self.bucket = settings.bucket
        self.prefix = _as_folder(settings.prefix)
        self._exits = AsyncExitStack()
        self._client: S3Client | None = None

    async def open(self) -> None:
        """Create the client; no request is made, so a store that is down now does not stop
        its owner from starting (each operation then raises :class:`StoreUnavailable`)."""
        s = self.settings
        config = AioConfig(
            connect_timeout=s.connect_timeout_s,
            read_timeout=s.read_timeout_s,
            retries={"max_attempts": s.max_attempts, "mode": "standard"},
            s3={"addressing_style": s.addressing_style},
            # Left unset, botocore may presign with the legacy SigV2, which newer AWS regions,
            # R2 and MinIO refuse.
            signature_version="s3v4",
            # botocore's default adds a CRC32 to every upload (an aws-chunked trailer over
            # HTTPS) that R2, MinIO and other S3-compatible servers refuse; blobs are already
            # named by their SHA-256.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client = await self._exits.enter_async_context(
            self._session.create_client(
                "s3",
                endpoint_url=s.endpoint_url,
                region_name=s.region,
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                config=config,
            )
        )

    async def aclose(self) -> None:
        await self._exits.aclose()
        self._client = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3Store used before open()")
        return self._client

    def key(self, relative: str) -> str:
        return self.prefix + relative

    async def put(self, chunks: AsyncIterator[bytes]) -> StoredBlob:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            blob = await _spool(chunks, spool)
            key = self.key(blob_key(blob.digest))
            with self._unavailable_on_error():
                if not await self._exists(key):
                    await self._upload(key, spool, blob.size)
        return blob

    async def _exists(self, key: str) -> bool:
        try:
            await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    async def _upload(self, key: str, spool: IO[bytes], size: int) -> None:
        await asyncio.to_thread(spool.seek, 0)
        if size <= self.settings.part_bytes:
            body = await asyncio.to_thread(spool.read)
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        else:
            await self._upload_in_parts(key, spool)

    async def _upload_in_parts(self, key: str, spool: IO[bytes]) -> None:
        upload = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = upload["UploadId"]
        try:
            parts = await self._send_parts(key, upload_id, spool)
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # An unfinished upload keeps its parts (and costs storage) until aborted.
            await asyncio.shield(self._abort_upload(key, upload_id))
            raise

    async def _send_parts(
        self, key: str, upload_id: str, spool: IO[bytes]
    ) -> list[CompletedPartTypeDef]:
        parts: list[CompletedPartTypeDef] = []
        while part := await asyncio.to_thread(spool.read, self.settings.part_bytes):
            number = len(parts) + 1
            sent = await self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
            )
            parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        return parts

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except (ClientError, *_TRANSPORT_ERRORS):
            pass  # the bucket's lifecycle rule for stale uploads is the fallback

    async def size_of(self, digest: str) -> int:
        key = self.key(blob_key(digest))
        with self._unavailable_on_error():
            try:
                head = await self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if not _is_missing(exc):
                    raise
                # A HEAD's 404 has no body to tell a missing key from a missing bucket.
                await self.client.head_bucket(Bucket=self.bucket)
                raise BlobMissing(digest) from exc
        return head["ContentLength"]

    async def read(self, digest: str, span: ByteRange | None = None) -> AsyncIterator[bytes]:
        key = self.key(blob_key(digest))
        with self._unavailable_on_error(missing=BlobMissing(digest)):
            try:
                if span is None:
                    response = await self.client.get_object(Bucket=self.bucket, Key=key)
                else:
                    response = await self.client.get_object(
                        Bucket=self.bucket, Key=key, Range=f"bytes={span.start}-{span.end}"
                    )
            except ClientError as exc:
                if _error_code(exc) == "InvalidRange":
                    return  # starts past the end: no bytes, as a file read there gives
                raise
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(READ_CHUNK_BYTES):
                    yield chunk

    async def delete(self, digest: str) -> None:
        key = self.key(blob_key(digest))
        with self._unavailable_on_error():
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def put_manifest(self, task_id: str, manifest: bytes) -> None:
        key = self.key(manifest_key(task_id))
        with self._unavailable_on_error():
            await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=manifest, ContentType="application/json"
            )

    async def read_manifest(self, task_id: str) -> bytes | None:
        key = self.key(manifest_key(task_id))
        with self._unavailable_on_error():
            try:
                response = await self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                raise
            async with response["Body"] as body:
                return await body.read()

    async def delete_manifest(self, task_id: str) -> None:
        key = self.key(manifest_key(task_id))
        with self._unavailable_on_error():
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def presigned_url(
        self, digest: str, *, filename: str, media_type: str, expires_s: int
    ) -> str | None:
        """Signed here, with no request to the bucket: the URL works as long as the blob
        exists and ``expires_s`` has not passed."""
        params = {
            "Bucket": self.bucket,
            "Key": self.key(blob_key(digest)),
            "ResponseContentType": media_type,
            "ResponseContentDisposition": attachment_disposition(filename),
        }
        with self._unavailable_on_error():
            return await self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_s
            )

    @contextmanager
    def _unavailable_on_error(self, *, missing: BlobMissing | None = None) -> Iterator[None]:
        """Map botocore's errors to the store's: ``missing`` for a missing object (when
        given), :class:`StoreUnavailable` for anything else."""
        try:
            yield
        except ClientError as exc:
            if missing is not None and _is_missing(exc):
                raise missing from exc
            self._raise_unavailable(exc)
        except _TRANSPORT_ERRORS as exc:
            self._raise_unavailable(exc)

    def _raise_unavailable(self, exc: Exception) -> NoReturn:
        where = self.settings.endpoint_url or "s3"
        raise StoreUnavailable(f"bucket {self.bucket} at {where}: {exc}") from exc


async def _spool(chunks: AsyncIterator[bytes], spool: IO[bytes]) -> StoredBlob:
    digester = Digester()
    async for chunk in chunks:
        digester.update(chunk)
        await asyncio.to_thread(spool.write, chunk)
    return digester.blob()


def _as_folder(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else f"{prefix}/"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_missing(exc: ClientError) -> bool:
    """A HEAD has no body, so its 404 carries no code but the status."""
    return _error_code(exc) in _MISSING_CODES
