"""The service's API pages (``/docs``, ``/redoc``) and the files they load, served by the
service itself (no CDN), open without the internal token. The pages rendering in a browser
is checked on the balancer (comfy-balancer/tests/test_docs_browser.py): both apps share them."""

import re

import httpx

from comfy_shared.api.docs_pages import IMMUTABLE
from comfy_testkit.stack import RunningComponent

ASSET = re.compile(r"""(?:src|href)=["']?([^"' >]+)""")


def assets_of(page: str) -> list[str]:
    return [url for url in ASSET.findall(page) if not url.startswith("#")]


async def test_the_pages_load_their_files_from_the_service_itself(
    service: RunningComponent,
) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as anonymous:
        docs, redoc = await anonymous.get("/docs"), await anonymous.get("/redoc")
        assert (docs.status_code, redoc.status_code) == (200, 200)
        urls = {*assets_of(docs.text), *assets_of(redoc.text)}
        assert all(url.startswith("/docs/assets/") for url in urls), urls
        types = {}
        for url in sorted(urls):
            asset = await anonymous.get(url)
            assert asset.status_code == 200, url
            assert asset.headers["cache-control"] == IMMUTABLE
            assert int(asset.headers["content-length"]) > 1000
            types[url.rsplit("/", 1)[1]] = asset.headers["content-type"]
        openapi = (await anonymous.get("/openapi.json")).json()

    assert types == {
        "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
        "swagger-ui.css": "text/css; charset=utf-8",
        "redoc.standalone.js": "text/javascript; charset=utf-8",
        "favicon.png": "image/png",
    }
    assert not [path for path in openapi["paths"] if path.startswith(("/docs", "/redoc"))]
    assert "/docs/oauth2-redirect" not in docs.text  # no OAuth2 flow: no page to come back to


async def test_an_asset_of_another_version_is_not_found(service: RunningComponent) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as anonymous:
        missing = await anonymous.get("/docs/assets/0.0.0/swagger-ui-bundle.js")
    assert missing.status_code == 404
