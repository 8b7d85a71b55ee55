"""The internal token: a comfy-service answers its API only to callers that carry it.

Between the processes of one deployment, a shared bearer token (``--internal-token``, or
``COMFY_INTERNAL_TOKEN`` for all of them) keeps anyone else who can reach a service's port from
placing, reading or cancelling tasks on it behind the balancer's back. Every route under
``/api/v1`` needs ``Authorization: Bearer <token>``, and so does ``/metrics`` (Prometheus sends
it with ``authorization: {credentials: ...}``); the probes (``/healthz``, ``/readyz``) stay
open, so orchestrators need no secret.

A plain ASGI middleware rather than a route dependency: it guards every router of the app,
including the shared ones (workflows, events, logs) and any added later, and refuses before a
body is read.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from comfy_shared.api.errors import error_response
from comfy_shared.api.schemas import API_PREFIX
from comfy_shared.models import ErrorType

UNAUTHORIZED_CODE = "unauthorized"
METRICS_PATH = "/metrics"
_AUTHORIZATION = b"authorization"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class InternalTokenMiddleware:
    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The API has no WebSocket route: a future one must be guarded here too.
        if scope["type"] != "http" or not _guarded(scope["path"]) or self._carries_token(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, UNAUTHORIZED_CODE, _missing_or_wrong(scope), ErrorType.VALIDATION, _CHALLENGE
        )
        await response(scope, receive, send)

    def _carries_token(self, scope: Scope) -> bool:
        given = bearer_token(dict(scope["headers"]).get(_AUTHORIZATION, b""))
        # Constant time: how much of a guess matched must not show in the answer's timing.
        return given is not None and hmac.compare_digest(given, self._token)


def _guarded(path: str) -> bool:
    return path in (API_PREFIX, METRICS_PATH) or path.startswith(f"{API_PREFIX}/")


def bearer_token(header: bytes) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def _missing_or_wrong(scope: Scope) -> str:
    if _AUTHORIZATION in dict(scope["headers"]):
        return "wrong internal token"
    return "this API needs the internal token (Authorization: Bearer <token>)"


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
