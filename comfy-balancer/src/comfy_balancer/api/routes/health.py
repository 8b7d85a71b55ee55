from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from comfy_balancer.deps import State
from comfy_shared.api.readiness import READINESS_RESPONSES, check, readiness_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=READINESS_RESPONSES)
async def readyz(state: State) -> JSONResponse:
    """Ready to take work: Redis answers and every background loop works."""
    return readiness_response({"redis": await check(state.redis.ping)}, state.loops)
