"""``/api/v1/whoami``: the caller as the balancer sees it, for pages that adapt to it (the
console shows an admin the keys and every tenant, and hides what a key may not do)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from comfy_balancer.deps import CallerOf, State
from comfy_shared.access import KeyLimits, Scope

router = APIRouter(tags=["keys"])


class Whoami(BaseModel):
    tenant: str
    key_id: str | None = Field(
        description="The key shown; null for the admin key or with authentication off."
    )
    scopes: list[Scope] = Field(description="What the key may do (admin: everything).")
    limits: KeyLimits
    authentication: bool = Field(description="False: the balancer asks for no key at all.")


@router.get("/whoami", response_model=Whoami)
async def whoami(caller: CallerOf, state: State) -> Whoami:
    """Who the key (or the browser's session) stands for: tenant, key id, scopes, limits."""
    return Whoami(
        tenant=caller.tenant,
        key_id=caller.key_id,
        scopes=sorted(caller.scopes),
        limits=caller.limits,
        authentication=state.auth.enabled,
    )
