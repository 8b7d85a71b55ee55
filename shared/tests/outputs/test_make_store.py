"""The output store's configuration, and the store ``make_store`` opens from it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from comfy_shared.outputs import OutputStoreConfig, make_store
from comfy_shared.outputs.file_store import FileStore
from comfy_shared.outputs.s3_store import S3Store
from comfy_testkit.s3 import S3Server


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


def s3_config(server: S3Server, **overrides: Any) -> OutputStoreConfig:
    fields: dict[str, Any] = {
        "backend": "s3",
        "bucket": f"test-{uuid.uuid4().hex[:12]}",
        "prefix": "comfy",
        "endpoint_url": server.url,
        "region": server.region,
        "addressing_style": "path",
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }
    return OutputStoreConfig(**{**fields, **overrides})


async def test_the_file_backend_is_opened_ready_to_store(tmp_path: Path) -> None:
    store = await make_store(OutputStoreConfig(dir=tmp_path / "outputs"))
    try:
        assert isinstance(store, FileStore)
        assert {p.name for p in (tmp_path / "outputs").iterdir()} == {
            "blobs",
            "manifests",
            "partial",
        }
        blob = await store.put(chunks_of(b"kept"))
        assert await store.size_of(blob.digest) == 4
    finally:
        await store.aclose()


async def test_the_s3_backend_stores_in_the_bucket_and_prefix_configured(
    s3_server: S3Server,
) -> None:
    config = s3_config(s3_server)
    store = await make_store(config)
    try:
        assert isinstance(store, S3Store)
        await store.client.create_bucket(Bucket=store.bucket)
        blob = await store.put(chunks_of(b"kept"))
        listing = await store.client.list_objects_v2(Bucket=str(config.bucket))
        assert [item["Key"] for item in listing["Contents"]] == [
            f"comfy/blobs/{blob.digest[:2]}/{blob.digest}"
        ]
    finally:
        await store.aclose()


async def presigned_credential(config: OutputStoreConfig) -> str:
    """The access key id a store made from ``config`` signs with (signing sends nothing)."""
    store = await make_store(config)
    try:
        url = await store.presigned_url("0" * 64, filename="a", media_type="a/b", expires_s=60)
    finally:
        await store.aclose()
    assert url is not None
    return httpx.URL(url).params["X-Amz-Credential"].split("/")[0]


async def test_explicit_credentials_are_the_ones_used(s3_server: S3Server) -> None:
    config = s3_config(s3_server, access_key_id="explicit-id", secret_access_key="explicit")
    assert await presigned_credential(config) == "explicit-id"


async def test_without_explicit_credentials_the_standard_aws_variables_are_used(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    config = s3_config(s3_server, access_key_id=None, secret_access_key=None)
    assert await presigned_credential(config) == "from-the-environment"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "s3"}, "the s3 backend needs a bucket"),
        ({"access_key_id": "id"}, "access_key_id and secret_access_key go together"),
        ({"secret_access_key": "secret"}, "access_key_id and secret_access_key go together"),
        ({"presign_expires_s": 0}, "greater than or equal to 1"),
        ({"presign_expires_s": 7 * 24 * 3600 + 1}, "less than or equal to 604800"),
        ({"backend": "ftp"}, "'file' or 's3'"),
        ({"buckt": "typo"}, "Extra inputs are not permitted"),
    ],
)
def test_an_incomplete_or_wrong_configuration_is_refused(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        OutputStoreConfig(**fields)


def test_the_secret_key_is_never_shown() -> None:
    config = OutputStoreConfig(
        backend="s3", bucket="b", access_key_id="id", secret_access_key="very-secret"
    )
    assert "very-secret" not in repr(config)
    assert "very-secret" not in config.model_dump_json()
    settings = config.s3_settings()
    assert settings.secret_access_key == "very-secret"
    assert "very-secret" not in repr(settings)


def test_the_file_backend_does_not_load_the_s3_client() -> None:
    """aiobotocore takes about a second to import: a process storing in a directory (and every
    test process starting one) must not pay for it."""
    probe = "import sys, comfy_shared.outputs; print('aiobotocore' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "False"
