from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from comfy_service.deps import State
from comfy_shared.api.readiness import OK, READINESS_RESPONSES, check, readiness_response
from comfy_shared.models import NodeLifecycle, NodeReadiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=READINESS_RESPONSES)
async def readyz(state: State) -> JSONResponse:
    """Ready to take work: Redis and ComfyUI both answer, the node is warmed up and not
    recycling, and every background loop works."""
    checks = {
        "redis": await check(state.redis.ping),
        "comfyui": await check(state.comfy.get_prompt_info),
        "lifecycle": lifecycle_check(state.lifecycle.current()),
    }
    return readiness_response(checks, state.loops)


def lifecycle_check(lifecycle: NodeLifecycle) -> str:
    if lifecycle.state is NodeReadiness.READY:
        return OK
    return f"{lifecycle.state.value}: {lifecycle.reason}" if lifecycle.reason else lifecycle.state
