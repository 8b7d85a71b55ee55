"""Output stores to test against: a directory, and a bucket on a real S3-compatible server
(``s3_server``, moto's server mode in its own process). ``store`` runs a test on each."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiobotocore.session import AioSession, get_session

from comfy_shared.outputs.file_store import FileStore
from comfy_shared.outputs.s3_store import S3Settings, S3Store
from comfy_shared.outputs.store import OutputStore
from comfy_testkit.s3 import S3Server

TEST_PREFIX = "outputs"


def s3_settings_for(server: S3Server, bucket: str) -> S3Settings:
    return S3Settings(
        bucket=bucket,
        prefix=TEST_PREFIX,
        endpoint_url=server.url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        addressing_style="path",
        connect_timeout_s=2,
        read_timeout_s=5,
    )


@pytest.fixture
def s3_settings(s3_server: S3Server) -> S3Settings:
    """Settings for a bucket of this test's own (made by ``s3_store``)."""
    return s3_settings_for(s3_server, f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def aio_session() -> AioSession:
    return get_session()


@pytest.fixture
async def s3_store(s3_settings: S3Settings, aio_session: AioSession) -> AsyncIterator[S3Store]:
    store = S3Store(s3_settings, session=aio_session)
    await store.open()
    await store.client.create_bucket(Bucket=s3_settings.bucket)
    yield store
    await store.aclose()


@pytest.fixture
async def file_store(tmp_path: Path) -> AsyncIterator[FileStore]:
    store = FileStore(tmp_path / "outputs")
    await store.open()
    yield store
    await store.aclose()


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest) -> OutputStore:
    backend: OutputStore = request.getfixturevalue(f"{request.param}_store")
    return backend
