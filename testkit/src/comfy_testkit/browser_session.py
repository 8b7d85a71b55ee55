"""A browser's session on the ComfyUI gateway, as an HTTP client: signed in through the
sign-in page with an API key, it then carries only the session cookie, and sends the
``Origin`` a page of the balancer would (a browser adds it to every request that changes
something)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

SESSION_COOKIE = "comfy_session"


@asynccontextmanager
async def signed_in_client(base_url: str, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """``async with signed_in_client(url, key) as browser:`` a client whose only credential
    is the cookie the sign-in page set for ``key``."""
    async with httpx.AsyncClient(
        base_url=base_url, timeout=15, headers={"Origin": base_url}
    ) as client:
        answer = await client.post("/signin", data={"key": key})
        if answer.status_code != 303 or SESSION_COOKIE not in client.cookies:
            raise AssertionError(f"sign-in refused: {answer.status_code} {answer.text[:200]}")
        yield client
