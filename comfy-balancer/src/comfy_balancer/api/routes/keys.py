"""``/api/v1/keys``: create, list and revoke API keys (the ``admin`` scope only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from comfy_balancer.api.answers import KEY_NOT_FOUND
from comfy_balancer.auth.keys import ApiKey, CreatedKey, NewKey
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
    responses=error_responses(MALFORMED_JSON, INVALID_REQUEST, REDIS_UNAVAILABLE),
)
async def create_key(new: NewKey, state: State) -> CreatedKey:
    """A new key; its secret is in ``key``, shown this once (only its hash is stored)."""
    return await state.keystore.create(new)


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
