from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from comfy_balancer.deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis unreachable."}})
async def readyz(state: State) -> JSONResponse:
    """Ready to take work: Redis answers."""
    try:
        await state.redis.ping()
    except Exception as exc:
        body = {"status": "not ready", "checks": {"redis": f"unreachable: {exc}"}}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": {"redis": "ok"}})
