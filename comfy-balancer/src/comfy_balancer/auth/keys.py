"""API keys in Redis: created with a secret shown once, found by the secret's hash, revoked.

A secret is ``csk_<key id>_<32 random characters>`` (about 190 bits): a plain SHA-256 of it is
enough to store (nothing to brute-force), and it is looked up by that hash, so a request costs
one read. Secrets never reach a log: only key ids and names do.

Each key also has a webhook signing secret (``whsec_...``, Standard Webhooks), shown once when
the key is made (or the secret renewed) and kept in the key's record: the balancer needs it to
sign, so it is stored as it is, like any signing key.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Final, cast

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from comfy_balancer.webhooks.signing import new_signing_secret
from comfy_shared.access import NAME_PATTERN, KeyLimits, KeyShare, Scope
from comfy_shared.clock import utc_now
from comfy_shared.errors import ComfyStackError
from comfy_shared.net_guard import MAX_URL_CHARS
from comfy_shared.redis_keys import RedisKeys

SECRET_PREFIX: Final = "csk_"
WEBHOOK_URL_DOC: Final = (
    "The webhook of the key's tasks that name none (https; see POST /api/v1/generate)."
)
ADMIN_KEY_ID: Final = "admin"
"""The id of the bootstrap key (``COMFY_BALANCER_ADMIN_KEY``), which lives only in settings."""


class KeyNotFound(ComfyStackError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")


class NewKey(BaseModel):
    """What ``POST /api/v1/keys`` takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Who the key is for.")
    tenant: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Whose tasks it sees (default: the name)."
    )
    scopes: list[Scope] = Field(
        default_factory=lambda: [Scope.SUBMIT, Scope.READ], min_length=1, max_length=3
    )
    limits: KeyLimits = Field(default_factory=KeyLimits)
    share: KeyShare = Field(default_factory=KeyShare)
    webhook_url: str | None = Field(
        default=None, max_length=MAX_URL_CHARS, description=WEBHOOK_URL_DOC
    )


class KeyUpdate(BaseModel):
    """What ``PATCH /api/v1/keys/{key_id}`` takes: the fields given are changed."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = Field(
        default=None, max_length=MAX_URL_CHARS, description=f"{WEBHOOK_URL_DOC} null: none."
    )
    new_webhook_secret: bool = Field(
        default=False,
        description="Replace the key's webhook signing secret (the new one is in the answer, "
        "shown this once); a key made before webhooks existed gets its first one.",
    )


class ApiKey(BaseModel):
    """A key as stored and listed: everything but its secret."""

    id: str
    name: str
    tenant: str
    scopes: list[Scope]
    limits: KeyLimits
    share: KeyShare = Field(default_factory=KeyShare)
    created_at: datetime
    webhook_url: str | None = None
    signs_webhooks: bool = Field(
        default=False, description="The key has its own webhook signing secret."
    )


class CreatedKey(ApiKey):
    key: str = Field(description="The secret: shown this once, stored only as a hash.")
    webhook_secret: str = Field(
        description="Signs the webhooks of the key's tasks (whsec_...): shown this once."
    )


class UpdatedKey(ApiKey):
    webhook_secret: str | None = Field(
        default=None, description="The new webhook signing secret, if one was asked for."
    )


class _StoredKey(ApiKey):
    secret_sha256: str
    webhook_secret: str | None = None


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def create(self, new: NewKey) -> CreatedKey:
        key_id = f"k{secrets.token_hex(5)}"
        secret = f"{SECRET_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        key = ApiKey(
            id=key_id,
            name=new.name,
            tenant=new.tenant or new.name,
            scopes=sorted(set(new.scopes)),
            limits=new.limits,
            share=new.share,
            created_at=utc_now(),
            webhook_url=new.webhook_url,
            signs_webhooks=True,
        )
        webhook_secret = new_signing_secret()
        stored = _StoredKey(
            **key.model_dump(), secret_sha256=secret_hash(secret), webhook_secret=webhook_secret
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.api_keys(), key_id, stored.model_dump_json())
            pipe.hset(self._keys.api_key_secrets(), stored.secret_sha256, key_id)
            await pipe.execute()
        return CreatedKey(**key.model_dump(), key=secret, webhook_secret=webhook_secret)

    async def list(self) -> list[ApiKey]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._keys.api_keys()))
        keys = [_public(_StoredKey.model_validate_json(value)) for value in raw.values()]
        return sorted(keys, key=lambda key: (key.created_at, key.id))

    async def revoke(self, key_id: str) -> ApiKey:
        """Delete the key; requests with its secret are refused from now on."""
        stored = await self._stored(key_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys.api_keys(), key_id)
            pipe.hdel(self._keys.api_key_secrets(), stored.secret_sha256)
            await pipe.execute()
        return _public(stored)

    async def update(self, key_id: str, update: KeyUpdate) -> UpdatedKey:
        """Change the fields ``update`` gives (an admin's rare write: the last one wins)."""
        stored = await self._stored(key_id)
        changes: dict[str, object] = {}
        if "webhook_url" in update.model_fields_set:
            changes["webhook_url"] = update.webhook_url
        new_secret = new_signing_secret() if update.new_webhook_secret else None
        if new_secret is not None:
            changes |= {"webhook_secret": new_secret, "signs_webhooks": True}
        stored = stored.model_copy(update=changes)
        await self._redis.hset(self._keys.api_keys(), key_id, stored.model_dump_json())
        return UpdatedKey(**_public(stored).model_dump(), webhook_secret=new_secret)

    async def webhook_secret(self, key_id: str) -> str | None:
        """The key's webhook signing secret; None for a key without one, or revoked."""
        raw = cast("str | None", await self._redis.hget(self._keys.api_keys(), key_id))
        return _StoredKey.model_validate_json(raw).webhook_secret if raw is not None else None

    async def _stored(self, key_id: str) -> _StoredKey:
        raw = cast("str | None", await self._redis.hget(self._keys.api_keys(), key_id))
        if raw is None:
            raise KeyNotFound(key_id)
        return _StoredKey.model_validate_json(raw)

    async def find(self, digest: str) -> ApiKey | None:
        """The key whose secret has this SHA-256; None for an unknown or revoked one."""
        key_id = await self._redis.hget(self._keys.api_key_secrets(), digest)
        if key_id is None:
            return None
        raw = cast("str | None", await self._redis.hget(self._keys.api_keys(), key_id))
        return _public(_StoredKey.model_validate_json(raw)) if raw is not None else None


def _public(stored: _StoredKey) -> ApiKey:
    return ApiKey(**stored.model_dump(exclude={"secret_sha256", "webhook_secret"}))
