"""Image parameters by URL: fetched through the guard from a real HTTP server on loopback."""

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from comfy_shared.net_guard import AllowList
from comfy_shared.url_inputs import UrlFetcher, fetch_url_images
from comfy_shared.workflows import DEFAULT_TEMPLATES_DIR, InvalidParams, TemplateLibrary

IMG2IMG = TemplateLibrary.load(DEFAULT_TEMPLATES_DIR).get("img2img-sdxl")
LOOPBACK = AllowList.parse("127.0.0.1")
PICTURE = b"\x89PNG\r\n\x1a\n" + b"p" * 100
RELEASE = web.AppKey("release", asyncio.Event)


async def stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-length": "1000"})
    await response.prepare(request)
    await response.write(b"x")
    await request.app[RELEASE].wait()  # the fetcher's deadline cuts it long before
    return response


async def picture(_: web.Request) -> web.Response:
    return web.Response(body=PICTURE)


async def big(_: web.Request) -> web.Response:
    return web.Response(body=b"b" * 5000)


async def moved(_: web.Request) -> web.Response:
    return web.Response(status=302, headers={"location": "/picture.png"})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/picture.png", picture)
    app.router.add_get("/big.png", big)
    app.router.add_get("/moved", moved)
    app.router.add_get("/stall", stall)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    app[RELEASE].set()
    await runner.cleanup()


async def fetch(url: str, allow: AllowList = LOOPBACK, timeout_s: float = 5) -> dict[str, str]:
    """What fetching ``url`` as img2img's image gives: the params, or the errors."""
    params = {"image": url, "prompt": "x"}
    fetcher = UrlFetcher(allow, max_bytes=1000, timeout_s=timeout_s)
    try:
        await fetch_url_images(IMG2IMG, params, fetcher)
    except InvalidParams as exc:
        return {"error": exc.errors["image"]}
    return params


async def test_an_allowed_url_becomes_the_bytes_it_serves(server: str) -> None:
    params = await fetch(f"{server}/picture.png")
    assert base64.b64decode(params["image"]) == PICTURE
    assert params["prompt"] == "x"


@pytest.mark.parametrize(
    ("path", "allow", "refusal"),
    [
        ("/picture.png", AllowList(), "must use https"),  # http only for an allow-listed host
        ("/big.png", LOOPBACK, "larger than 1000 bytes"),
        ("/moved", LOOPBACK, "answered 302"),  # a redirect is not followed
        ("/missing.png", LOOPBACK, "answered 404"),
    ],
)
async def test_refusals_name_the_parameter_and_why(
    server: str, path: str, allow: AllowList, refusal: str
) -> None:
    assert refusal in (await fetch(f"{server}{path}", allow))["error"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x.png",  # loopback
        "https://10.1.2.3/x.png",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local: a cloud's metadata service
        "https://[::1]/x.png",
        "https://user:pw@example.com/x.png",
    ],
)
async def test_addresses_only_the_stack_reaches_are_refused(url: str) -> None:
    assert "could not fetch the image" in (await fetch(url, AllowList()))["error"]


async def test_a_server_that_stalls_is_cut_at_the_deadline(server: str) -> None:
    started = asyncio.get_running_loop().time()
    answer = await fetch(f"{server}/stall", timeout_s=0.5)
    assert "within 0.5 s" in answer["error"]
    assert asyncio.get_running_loop().time() - started < 3


async def test_turned_off_refuses_every_url() -> None:
    params = {"image": "https://example.com/x.png", "prompt": "x"}
    with pytest.raises(InvalidParams, match="turned off"):
        await fetch_url_images(IMG2IMG, params, None)


async def test_base64_images_are_left_alone() -> None:
    params = {"image": base64.b64encode(PICTURE).decode(), "prompt": "x"}
    before = dict(params)
    await fetch_url_images(IMG2IMG, params, None)
    assert params == before


def test_no_proxy_of_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert httpx.AsyncClient(trust_env=False)._mounts == {}
