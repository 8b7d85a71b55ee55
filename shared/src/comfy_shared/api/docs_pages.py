"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts served by the app itself, so they
work on a network without internet; FastAPI's own pages load them from a CDN.

The files come from the ``fastapi-offline`` distribution (Swagger UI 5, which renders the
OpenAPI 3.1 FastAPI writes, and ReDoc 2). Their URLs carry its version, so a browser may keep
them for good (``immutable``): an upgrade changes the URLs. None of these routes is in the
OpenAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS_DISTRIBUTION: Final = "fastapi-offline"
ASSETS_VERSION: Final = version(ASSETS_DISTRIBUTION)
ASSETS_PREFIX: Final = f"/docs/assets/{ASSETS_VERSION}"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
REDOC_IMAGES: Final = "img-src 'self' data:"
"""ReDoc shows its maker's logo from their CDN (hidden when it fails to load): the browser is
told not to fetch it, so the page asks nothing of the internet."""

_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    media_type: str

    @property
    def path(self) -> str:
        return f"{ASSETS_PREFIX}/{self.name}"


SWAGGER_JS: Final = Asset("swagger-ui-bundle.js", "text/javascript; charset=utf-8")
SWAGGER_CSS: Final = Asset("swagger-ui.css", "text/css; charset=utf-8")
REDOC_JS: Final = Asset("redoc.standalone.js", "text/javascript; charset=utf-8")
FAVICON: Final = Asset("favicon.png", "image/png")
ASSETS: Final = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON)


def install_docs_pages(app: FastAPI) -> None:
    """``/docs``, ``/redoc`` and their assets, for an app made with ``docs_url=None`` and
    ``redoc_url=None`` (its ``openapi_url`` kept)."""
    for asset in ASSETS:
        _serve_asset(app, asset)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{SWAGGER_JS.path}",
            swagger_css_url=f"{root}{SWAGGER_CSS.path}",
            swagger_favicon_url=f"{root}{FAVICON.path}",
            oauth2_redirect_url=None,  # API keys only: no OAuth2 flow to come back from
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_JS.path}",
            redoc_favicon_url=f"{root}{FAVICON.path}",
            with_google_fonts=False,  # a CDN too: the system fonts do
        )
        page.headers["Content-Security-Policy"] = REDOC_IMAGES
        return page


def _serve_asset(app: FastAPI, asset: Asset) -> None:
    file = _ASSETS_DIR / asset.name
    if not file.is_file():  # the distribution changed its layout: say so at start, not in a page
        raise RuntimeError(f"{ASSETS_DISTRIBUTION} {ASSETS_VERSION} has no {asset.name}")

    async def serve() -> FileResponse:
        return FileResponse(file, media_type=asset.media_type, headers={"Cache-Control": IMMUTABLE})

    app.add_api_route(asset.path, serve, methods=["GET"], include_in_schema=False)


def _root_path(request: Request) -> str:
    """The prefix a proxy mounts the app under, as FastAPI's own pages use it."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")
