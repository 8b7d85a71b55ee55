"""The gateway's browser side, put on the balancer's app by :func:`install_ui`.

- Always: the catalogue routes (:mod:`.catalogue`) and each user's settings and userdata
  (:mod:`.userdata`), at ``/x`` and ``/api/x`` as ComfyUI serves them.
- With ``--ui`` (the default): ComfyUI's web frontend at ``/`` (:mod:`.ui_static`) and the
  sign-in page (:mod:`.signin`). With authentication on, ``/`` sends a browser that is not
  signed in to ``/signin``; the frontend's other files are the public package's and are
  served to anyone, as the package index does.

None of these routes is in the OpenAPI document: it describes ``/api/v1``, and these speak
ComfyUI's protocol, with ComfyUI's own answers (plain-text refusals on the user routes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from comfy_balancer.auth.sessions import CrossSiteRequest
from comfy_balancer.deps import CallerOf, State, may_read
from comfy_balancer.gateway import catalogue, signin, userdata
from comfy_balancer.gateway.catalogue_extensions import ExtensionCatalogue
from comfy_balancer.gateway.ui_static import FrontendFiles, GzipCache, frontend_dir
from comfy_balancer.gateway.userdata_store import UserdataError
from comfy_balancer.settings import BalancerSettings
from comfy_shared.api.errors import error_response
from comfy_shared.models import ErrorType

COMFYUI_API_PREFIX: Final = "/api"
INDEX: Final = "index.html"
EXTENSIONS: Final = "extensions"
_INDEX_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "frame-ancestors 'self'",
}


def install_ui(app: FastAPI, settings: BalancerSettings) -> None:
    app.state.gateway_extensions = ExtensionCatalogue(reference=settings.ui_reference_node)
    app.add_exception_handler(UserdataError, _userdata_refused)
    app.add_exception_handler(CrossSiteRequest, _cross_site_refused)
    for router in (catalogue.router, userdata.router):
        app.include_router(router)
        app.include_router(router, prefix=COMFYUI_API_PREFIX)
    app.include_router(catalogue.unprefixed)
    if settings.ui or settings.console:
        app.include_router(signin.router)
    if settings.ui:
        install_frontend(app, frontend_dir())


def install_frontend(app: FastAPI, directory: Path) -> None:
    """``/`` (behind sign-in), every file and folder of the built frontend at the root, and
    ``/extensions/...``: the frontend's own (``core``) from the package, any other from the
    reference node."""
    gzip_cache = GzipCache()
    root = FrontendFiles(directory, gzip_cache)
    app.include_router(_index_router(root))
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and entry.name != EXTENSIONS:
            app.mount(f"/{entry.name}", FrontendFiles(entry, gzip_cache))
        elif entry.is_file() and entry.name != INDEX:
            app.include_router(_file_router(root, entry.name))
    for pack in sorted((directory / EXTENSIONS).iterdir()):
        if pack.is_dir():
            app.mount(f"/{EXTENSIONS}/{pack.name}", FrontendFiles(pack, gzip_cache))
    app.include_router(_extension_files)


def _index_router(root: FrontendFiles) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"])
    @router.api_route(f"/{INDEX}", methods=["GET", "HEAD"])
    async def index(request: Request, state: State) -> Response:
        if not await may_read(request, state):
            return RedirectResponse(
                "/signin", status_code=303, headers={"Cache-Control": "no-store"}
            )
        response = await root.get_response(INDEX, request.scope)
        response.headers.update(_INDEX_HEADERS)
        return response

    @router.api_route("/user.css", methods=["GET", "HEAD"])
    async def user_css() -> Response:
        # index.html links it; core has none at its web root. Each user's own stylesheet is
        # the userdata file user.css, which index.html links too.
        return Response(b"", media_type="text/css", headers={"Cache-Control": "no-cache"})

    return router


def _file_router(root: FrontendFiles, name: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.api_route(f"/{name}", methods=["GET", "HEAD"])
    async def frontend_file(request: Request) -> Response:
        return await root.get_response(name, request.scope)

    return router


_extension_files = APIRouter(include_in_schema=False)


@_extension_files.get(f"/{EXTENSIONS}/{{path:path}}")
async def extension_file(path: str, request: Request, _: CallerOf, state: State) -> Response:
    """A custom node's frontend file, from the reference node (cached)."""
    if "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        return Response(status_code=404)
    found = await catalogue.extension_catalogue(request).file(
        path, state.registry, state.nodes_client
    )
    return Response(
        found.content,
        status_code=found.status,
        media_type=found.media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def _userdata_refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, UserdataError)
    return PlainTextResponse(str(exc), status_code=exc.status)


async def _cross_site_refused(_: Request, exc: Exception) -> Response:
    return error_response(403, "cross_site_request", str(exc), ErrorType.VALIDATION)
