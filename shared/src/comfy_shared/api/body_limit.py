"""Bounds on a request body as it arrives, before the app holds it whole: its size (413 above
``max_bytes``) and the time it takes to arrive (408 after ``read_timeout_s``).

Without the time bound, a request whose Content-Length promises more than it sends (or that
trickles a byte now and then) holds its connection, and whatever the route holds while it
reads, for as long as the client likes. The deadline runs from the request's start, so a
slow trickle does not get a fresh timeout per chunk. Once the body is complete, ``receive``
is no longer timed: an event stream waits on it for the client's disconnect, for hours.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfy_shared.api.errors import error_response
from comfy_shared.models import ErrorType

_CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; FastAPI lets an
    HTTPException from the body reader through, so the app's handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when the body is not complete by the deadline; the answer
    closes the connection (what is left of the body will not be read)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408, f"the request body did not arrive within {timeout_s:g} s", headers=_CLOSE
        )


class BodyLimitsMiddleware:
    """Checks Content-Length up front; counts and times the body as it arrives."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, self._guarded(receive), send)

    def _guarded(self, receive: Receive) -> Receive:
        received = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s

        async def guarded_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.read_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return guarded_receive

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"request body larger than {self.max_bytes} bytes",
            ErrorType.VALIDATION,
            _CLOSE,
        )
        await response(scope, receive, send)
