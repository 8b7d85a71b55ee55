"""What the balancer's ComfyUI gateway serves from one node's ComfyUI: the frontend extensions
of its custom nodes (``GET /extensions``, the JavaScript under ``/extensions/<pack>/``).

ComfyUI is reachable only from its service, so the service passes them through: read-only,
behind the internal token like the rest of ``/api/v1``, and left out of the API description
(the balancer is their only client). A path with an empty, ``.`` or ``..`` part is refused
before ComfyUI is asked.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from comfy_service.deps import State

router = APIRouter(prefix="/comfyui", tags=["comfyui"], include_in_schema=False)


@router.get("/extensions")
async def extensions(state: State) -> list[str]:
    return await state.comfy.extensions()


@router.get("/extensions/{path:path}")
async def extension_file(path: str, state: State) -> Response:
    if "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise HTTPException(404, "no such extension file")
    content, media_type = await state.comfy.extension_file(path)
    return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})
