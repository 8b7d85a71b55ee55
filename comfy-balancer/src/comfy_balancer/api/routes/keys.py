"""``/api/v1/keys``: create, list, change and revoke API keys (the ``admin`` scope only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from comfy_balancer.api.answers import INVALID_WEBHOOK_URL, KEY_NOT_FOUND
from comfy_balancer.auth.keys import ApiKey, CreatedKey, KeyUpdate, NewKey, UpdatedKey
from comfy_balancer.deps import State, require_admin
from comfy_shared.api.openapi import (
    INVALID_REQUEST,
    MALFORMED_JSON,
    REDIS_UNAVAILABLE,
    error_responses,
)

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[Depends(require_admin)])

KeyId = Annotated[str, Path(pattern=r"^k[0-9a-f]{10}$", description="The key's id.")]


@router.post(
    "",
    status_code=201,
    response_model=CreatedKey,
    responses=error_responses(
        MALFORMED_JSON, INVALID_REQUEST, INVALID_WEBHOOK_URL, REDIS_UNAVAILABLE
    ),
)
async def create_key(new: NewKey, state: State) -> CreatedKey:
    """A new key; its secret is in ``key`` and its webhook signing secret in
    ``webhook_secret``, both shown this once."""
    if new.webhook_url is not None:
        await state.webhooks.check_url(new.webhook_url)
    return await state.keystore.create(new)


@router.patch(
    "/{key_id}",
    response_model=UpdatedKey,
    responses=error_responses(
        MALFORMED_JSON, INVALID_REQUEST, INVALID_WEBHOOK_URL, KEY_NOT_FOUND, REDIS_UNAVAILABLE
    ),
)
async def update_key(key_id: KeyId, update: KeyUpdate, state: State) -> UpdatedKey:
    """Change the key's default ``webhook_url`` (null: none), or give it a new webhook
    signing secret (in the answer, shown this once)."""
    if update.webhook_url is not None:
        await state.webhooks.check_url(update.webhook_url)
    return await state.keystore.update(key_id, update)


@router.get("", response_model=list[ApiKey], responses=error_responses(REDIS_UNAVAILABLE))
async def list_keys(state: State) -> list[ApiKey]:
    """Every key, without secrets."""
    return await state.keystore.list()


@router.delete(
    "/{key_id}",
    response_model=ApiKey,
    responses=error_responses(INVALID_REQUEST, KEY_NOT_FOUND, REDIS_UNAVAILABLE),
)
async def revoke_key(key_id: KeyId, state: State) -> ApiKey:
    """Revoke a key: refused on every replica within a few seconds."""
    return await state.keystore.revoke(key_id)
