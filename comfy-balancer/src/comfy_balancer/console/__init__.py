"""The web console at ``/console``: generate from a template and watch it run, the tasks with
their timelines and logs, the nodes, the queue and usage, and (for an admin) the API keys.

It is a page of plain HTML, CSS and JavaScript modules in ``assets/`` that a browser runs as
they are: no build step, no third-party code, nothing fetched from elsewhere (it works
offline). Every figure it shows comes from ``/api/v1`` with the browser's sign-in cookie
(:mod:`comfy_balancer.auth.sessions`), so the console can do exactly what its key may and a
page of it never sees another tenant's work the API would not show.

The page's Content-Security-Policy lets it run only its own scripts and talk only to this
server; it cannot be framed.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from comfy_balancer.deps import State, may_read
from comfy_balancer.gateway.ui_static import FrontendFiles, GzipCache

CONSOLE_PATH: Final = "/console"
PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def assets_dir() -> Path:
    return Path(str(files("comfy_balancer.console") / "assets"))


def install_console(app: FastAPI) -> None:
    """``/console`` (behind sign-in) and its files under ``/console/assets/``."""
    app.include_router(_router)
    app.mount(f"{CONSOLE_PATH}/assets", FrontendFiles(assets_dir(), GzipCache()))


_router = APIRouter(include_in_schema=False)


@_router.api_route(CONSOLE_PATH, methods=["GET", "HEAD"])
async def console_page(request: Request, state: State) -> Response:
    if not await may_read(request, state):
        return RedirectResponse(
            f"/signin?next={CONSOLE_PATH}", status_code=303, headers={"Cache-Control": "no-store"}
        )
    return FileResponse(
        assets_dir() / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


@_router.api_route(f"{CONSOLE_PATH}/", methods=["GET", "HEAD"])
async def console_slash() -> Response:
    return RedirectResponse(CONSOLE_PATH, status_code=308)
