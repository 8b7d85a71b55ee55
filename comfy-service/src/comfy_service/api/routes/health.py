from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from comfy_service.deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis or ComfyUI unreachable."}})
async def readyz(state: State) -> JSONResponse:
    """Ready to take work: Redis and ComfyUI both answer."""
    checks: dict[str, Any] = {}
    try:
        await state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {exc}"
    try:
        await state.comfy.get_prompt_info()
        checks["comfyui"] = "ok"
    except Exception as exc:
        checks["comfyui"] = f"unreachable: {exc}"
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)
