"""From a request's credentials to a :class:`Caller`, or 401 / 403.

A key is accepted as ``Authorization: Bearer <key>``, ``X-API-Key: <key>``, HTTP Basic with the
key as the password (for ComfyUI clients that only do basic auth), and ``?token=<key>`` on
event streams only (a browser's EventSource cannot set headers). Resolved keys are kept for
``CACHE_S``: a revoked key stops working within that time on every replica.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Final

from fastapi import Request
from starlette.requests import HTTPConnection

from comfy_balancer.auth.keys import ADMIN_KEY_ID, ApiKey, KeyStore, secret_hash
from comfy_shared.access import TRUSTED, Caller, Scope
from comfy_shared.errors import ComfyStackError

CACHE_S: Final = 2.0
ADMIN_TENANT: Final = "admin"


class Unauthorized(ComfyStackError):
    """No key, or one that is unknown or revoked."""


class Forbidden(ComfyStackError):
    def __init__(self, scope: Scope) -> None:
        super().__init__(f"this API key lacks the {scope.value!r} scope")


class Authenticator:
    def __init__(self, *, enabled: bool, admin_secret: str | None, store: KeyStore) -> None:
        self.enabled = enabled
        self._admin_digest = secret_hash(admin_secret) if admin_secret is not None else None
        self._store = store
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def caller(self, secret: str | None, *, needs: Scope) -> Caller:
        """The caller a secret stands for, allowed ``needs``; raises Unauthorized or Forbidden."""
        if not self.enabled:
            return TRUSTED
        if not secret:
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
        return _allowed(await self._resolve(secret), needs)

    async def caller_for_digest(self, digest: str, *, needs: Scope) -> Caller:
        """The caller of the key whose secret has this SHA-256 (what a browser session keeps
        instead of the secret), exactly as :meth:`caller` would answer for the secret: a key
        revoked (or an admin key changed) since stops working the same way."""
        if not self.enabled:
            return TRUSTED
        return _allowed(await self._resolve_digest(digest), needs)

    async def _resolve(self, secret: str) -> Caller | None:
        return await self._resolve_digest(secret_hash(secret))

    async def _resolve_digest(self, digest: str) -> Caller | None:
        # Constant time: how much of a guess matched must not show in the answer's timing.
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return _ADMIN
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        key = await self._store.find(digest)
        caller = _caller_of(key) if key is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: a flood of made-up secrets cannot grow it
        self._cache[digest] = (now, caller)
        return caller


_ADMIN: Final = Caller(tenant=ADMIN_TENANT, scopes=frozenset(Scope), key_id=ADMIN_KEY_ID)


def _allowed(caller: Caller | None, needs: Scope) -> Caller:
    if caller is None:
        raise Unauthorized("unknown or revoked API key")
    if not caller.may(needs):
        raise Forbidden(needs)
    return caller


def _caller_of(key: ApiKey) -> Caller:
    return Caller(
        tenant=key.tenant,
        scopes=frozenset(key.scopes),
        key_id=key.id,
        limits=key.limits,
        share=key.share,
        webhook_url=key.webhook_url,
        signs_webhooks=key.signs_webhooks,
    )


def presented_secret(request: HTTPConnection) -> str | None:
    """The key a request (or a WebSocket's upgrade request) shows, in any of the accepted
    places."""
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        return _basic_password(value.strip())
    if api_key := request.headers.get("x-api-key"):
        return api_key
    if request.url.path.endswith("/events"):
        return request.query_params.get("token")
    return None


def _basic_password(encoded: str) -> str | None:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return password or user or None  # some clients put a token in the user name


def needed_scope(request: Request) -> Scope:
    """Reading needs ``read``; anything that changes something needs ``submit``."""
    return Scope.READ if request.method in ("GET", "HEAD") else Scope.SUBMIT
