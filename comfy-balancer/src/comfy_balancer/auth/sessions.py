"""Browser sessions: who a browser is, once its user signed in with an API key.

ComfyUI's frontend and the console send no credential of their own, so a browser signs in
once (``/signin``) and then carries a cookie, which every route that takes an API key accepts
instead (``comfy_balancer.deps.get_caller``). The cookie holds a random session id (256
bits), never the key; Redis keeps the session under the id's SHA-256 (a copy of Redis does
not hand out live sessions) with the key's secret SHA-256, its id and tenant, for
``--ui-session-s``. Every request resolves the session through the same
:class:`Authenticator` as a key in a header, so a session stands for exactly the caller its
key does, and a key revoked since (or an admin key changed) ends its sessions on every
replica within the authenticator's cache time.

A cookie is sent by the browser whatever page asks, so a request that changes something and
is authenticated by the cookie alone must come from a page of this origin
(:func:`require_same_origin`); ``SameSite=Strict`` already keeps other sites' requests from
carrying it, the origin check also covers sibling hosts of the same site.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from pydantic import BaseModel
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from comfy_balancer.auth.callers import Authenticator
from comfy_shared.access import Caller, Scope
from comfy_shared.clock import now_ms
from comfy_shared.errors import ComfyStackError
from comfy_shared.redis_keys import RedisKeys

if TYPE_CHECKING:  # the app state holds the auth objects: importing it here would be circular
    from comfy_balancer.lifespan import BalancerState

SESSION_COOKIE: Final = "comfy_session"
_SESSION_ID: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
"""What ``secrets.token_urlsafe(32)`` makes: anything else is not worth a Redis read."""
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class CrossSiteRequest(ComfyStackError):
    """A change asked with a session cookie by a page of another origin (or of an unknown
    one): answered 403, nothing done."""


class BrowserSession(BaseModel):
    secret_sha256: str
    key_id: str | None
    tenant: str
    created_ms: int


class SessionStore:
    def __init__(self, redis: Redis, keys: RedisKeys, *, lifetime_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self.lifetime_s = lifetime_s

    async def open(self, secret_sha256: str, caller: Caller) -> str:
        """A new session for the holder of the key; returns the id the cookie carries."""
        session_id = secrets.token_urlsafe(32)
        session = BrowserSession(
            secret_sha256=secret_sha256,
            key_id=caller.key_id,
            tenant=caller.tenant,
            created_ms=now_ms(),
        )
        await self._redis.set(self._key(session_id), session.model_dump_json(), ex=self.lifetime_s)
        return session_id

    async def find(self, session_id: str) -> BrowserSession | None:
        if not _SESSION_ID.match(session_id):
            return None
        raw = await self._redis.get(self._key(session_id))
        return BrowserSession.model_validate_json(raw) if raw is not None else None

    async def close(self, session_id: str) -> None:
        if _SESSION_ID.match(session_id):
            await self._redis.delete(self._key(session_id))

    def _key(self, session_id: str) -> str:
        return self._keys.ui_session(hashlib.sha256(session_id.encode()).hexdigest())


def sessions_of(state: BalancerState) -> SessionStore:
    return SessionStore(state.redis, state.keys, lifetime_s=state.settings.ui_session_s)


async def session_caller(
    conn: HTTPConnection, *, sessions: SessionStore, auth: Authenticator, needs: Scope
) -> Caller | None:
    """The caller whose browser session ``conn``'s cookie names (an HTTP request or a
    WebSocket upgrade alike): None without a cookie or once the session ended; Unauthorized
    if its key was revoked since, Forbidden if the key lacks ``needs``. It does not check
    the origin: see :func:`require_same_origin`."""
    session_id = conn.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    session = await sessions.find(session_id)
    if session is None:
        return None
    return await auth.caller_for_digest(session.secret_sha256, needs=needs)


def is_same_origin(conn: HTTPConnection) -> bool:
    """Whether the page that sent ``conn`` is of this server's origin, by what the browser
    says: ``Sec-Fetch-Site`` where it is sent (browsers set it, scripts cannot), else the
    ``Origin`` header against the ``Host`` the request was sent to. A request with neither
    is not a browser's, or one too old to tell: refused."""
    site = conn.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin, host = conn.headers.get("origin"), conn.headers.get("host")
    if not origin or not host:
        return False
    # The page's scheme as the browser saw it: behind a TLS proxy this server may see http.
    scheme = origin.partition("://")[0]
    mine = _host_and_port(f"{scheme}://{host}")
    return mine is not None and _host_and_port(origin) == mine


def require_same_origin(conn: HTTPConnection) -> None:
    if not is_same_origin(conn):
        raise CrossSiteRequest(
            "this request carries a sign-in cookie but does not come from a page of this "
            "server; send an API key instead"
        )


def _host_and_port(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname.lower(), port
