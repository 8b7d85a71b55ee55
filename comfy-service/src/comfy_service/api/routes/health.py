from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from comfy_service.deps import State
from comfy_shared.api.readiness import READINESS_RESPONSES, check, readiness_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=READINESS_RESPONSES)
async def readyz(state: State) -> JSONResponse:
    """Ready to take work: Redis and ComfyUI both answer and every background loop works."""
    checks = {
        "redis": await check(state.redis.ping),
        "comfyui": await check(state.comfy.get_prompt_info),
    }
    return readiness_response(checks, state.loops)
