"""Image parameters given as URLs: fetched once, when the request arrives, then handled as if
the caller had sent the bytes (checked for type, size and pixels, stored with the task).

A node never fetches anything: the request's URL is called by the process that accepted it,
through the guard of ``comfy_shared.net_guard`` (no loopback, private or link-local address
unless allow-listed, the checked address dialled, no redirect followed), with a deadline for
the whole download and a limit on its bytes that holds whatever the server declares.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Final

import httpx

from comfy_shared.errors import ComfyStackError
from comfy_shared.net_guard import (
    AllowList,
    UrlRefused,
    parse_target,
    request_at,
    resolve_target,
)
from comfy_shared.workflows import InvalidParams, Template

USER_AGENT: Final = "comfy-stack-inputs/1"
URL_SCHEMES: Final = ("https://", "http://")


class FetchFailed(ComfyStackError):
    """The URL was allowed but gave no usable file."""


class UrlFetcher:
    def __init__(self, allow: AllowList, *, max_bytes: int, timeout_s: float) -> None:
        self._allow = allow
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def fetch(self, http: httpx.AsyncClient, url: str) -> bytes:
        """The body of ``url``; raises UrlRefused or FetchFailed."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._download(http, url)
        except TimeoutError:
            raise FetchFailed(f"no complete answer within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None

    async def _download(self, http: httpx.AsyncClient, url: str) -> bytes:
        target = parse_target(url, self._allow)
        address = await resolve_target(target, self._allow)
        request = request_at(http, "GET", target, address, headers={"user-agent": USER_AGENT})
        response = await http.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code != 200:
                raise FetchFailed(f"the URL answered {response.status_code}, not 200")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise FetchFailed(f"the file is larger than {self._max_bytes} bytes")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise FetchFailed(f"the file is larger than {self._max_bytes} bytes")
            return bytes(body)
        finally:
            await response.aclose()


async def fetch_url_images(
    template: Template, params: dict[str, Any], fetcher: UrlFetcher | None
) -> None:
    """Replace each image parameter of ``params`` that is a URL by the base64 of what it
    serves. Raises InvalidParams naming each one that could not be fetched."""
    urls = {
        name: value
        for name in template.image_params()
        if isinstance(value := params.get(name), str) and value.startswith(URL_SCHEMES)
    }
    if not urls:
        return
    if fetcher is None:
        raise InvalidParams(template.name, dict.fromkeys(urls, "images by URL are turned off"))
    errors: dict[str, str] = {}
    # No proxy from the environment: it would dial the name, not the address checked.
    async with httpx.AsyncClient(trust_env=False) as http:
        fetched = await asyncio.gather(*(_fetch_one(fetcher, http, url) for url in urls.values()))
    for name, (data, problem) in zip(urls, fetched, strict=True):
        if problem is not None:
            errors[name] = problem
        else:
            params[name] = base64.b64encode(data).decode()
    if errors:
        raise InvalidParams(template.name, errors)


async def _fetch_one(
    fetcher: UrlFetcher, http: httpx.AsyncClient, url: str
) -> tuple[bytes, str | None]:
    try:
        return await fetcher.fetch(http, url), None
    except (UrlRefused, FetchFailed) as exc:
        return b"", f"could not fetch the image: {exc}"
