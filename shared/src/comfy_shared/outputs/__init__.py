"""Finished tasks' outputs, kept apart from the node that made them: the store interface
(``store``), its backends (``file_store``, ``s3_store``), and here the configuration both the
service and the balancer embed, with :func:`make_store` to open the store it names.

Usage, in a lifespan::

    store = await make_store(settings.output_store)   # opened: FileStore.open() is done here
    ...
    await store.aclose()
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from comfy_shared.outputs.file_store import FileStore
from comfy_shared.outputs.store import OutputStore

if TYPE_CHECKING:
    from comfy_shared.outputs.s3_store import S3Settings

# aiobotocore is imported only when the s3 backend is chosen: it adds about a second to the
# start of every process that would import it for nothing.

DEFAULT_OUTPUT_DIR = Path(".comfy-stack/outputs")
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600
"""The longest a SigV4 presigned URL may live."""


class OutputStoreConfig(BaseModel):
    """Where outputs are stored. The service that writes them and the balancer that serves
    them must name the same store (the same directory, or the same bucket and prefix)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["file", "s3"] = Field(
        default="file", description="Where outputs go: a directory, or an S3-compatible bucket."
    )
    dir: Path = Field(
        default=DEFAULT_OUTPUT_DIR,
        description="Directory of the file backend (shared by the services and the balancer).",
    )
    bucket: str | None = Field(default=None, description="Bucket of the s3 backend (required).")
    prefix: str = Field(default="", description="Key prefix in the bucket, e.g. 'comfy/'.")
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint for MinIO, R2 and the like; unset: AWS."
    )
    region: str | None = Field(default=None, description="The bucket's region.")
    addressing_style: Literal["auto", "virtual", "path"] = Field(
        default="auto", description="'path' for most self-hosted servers (MinIO)."
    )
    access_key_id: str | None = Field(
        default=None,
        description="With secret_access_key; unset: the standard AWS chain "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role).",
    )
    secret_access_key: SecretStr | None = Field(default=None, description="See access_key_id.")
    presign: bool = Field(
        default=False,
        description="Send clients to a presigned URL of the bucket instead of relaying the "
        "bytes (s3 only; a directory has no URLs).",
    )
    presign_expires_s: int = Field(
        default=300,
        ge=1,
        le=MAX_PRESIGN_EXPIRES_S,
        description="Seconds a presigned URL stays valid.",
    )

    @model_validator(mode="after")
    def _complete_for_its_backend(self) -> Self:
        if self.backend == "s3" and not self.bucket:
            raise ValueError("the s3 backend needs a bucket")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self

    def s3_settings(self) -> S3Settings:
        from comfy_shared.outputs.s3_store import S3Settings

        if self.bucket is None:
            raise ValueError("the s3 backend needs a bucket")
        secret = self.secret_access_key
        return S3Settings(
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            addressing_style=self.addressing_style,
        )


async def make_store(config: OutputStoreConfig) -> OutputStore:
    """The store ``config`` names, opened (a directory's layout made, a client created); the
    caller owns it and awaits its ``aclose()``. Raises ``StoreUnavailable`` when a directory
    cannot be made; a bucket is not contacted until it is used."""
    if config.backend == "file":
        files = FileStore(config.dir)
        await files.open()
        return files
    from comfy_shared.outputs.s3_store import S3Store

    bucket = S3Store(config.s3_settings())
    await bucket.open()
    return bucket
