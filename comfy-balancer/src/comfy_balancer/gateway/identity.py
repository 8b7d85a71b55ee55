"""Who calls a gateway route: a :class:`GatewayUser`, one tenant (and the API key shown).

ComfyUI itself has no authentication; the gateway asks for the balancer's API keys, in every
place a ComfyUI client can put one: ``Authorization: Bearer``, ``X-API-Key``, HTTP Basic with
the key as the password (scripts and browsers that only do Basic), and ``?token=`` (a browser's
WebSocket cannot send headers). With authentication off every caller is the default tenant.

The ways to recognise a user form a chain (:class:`IdentityChain`, kept on the app): the first
resolver that recognises the request wins, and a request no resolver recognises is refused
(401). The credentials above are the one resolver given here; a sign-in cookie is another,
put in front of it with :meth:`IdentityChain.prepend` by whoever builds the sign-in. Routes
take the user as the dependency :data:`UserOf` (a WebSocket handler awaits :func:`user_of`).

A credential a browser sends by itself, unasked (a cookie, Basic credentials it remembers),
makes a request *ambient*: another site could have the browser send it. Such a request may
change nothing unless it comes from the same site (:func:`refuse_cross_site`; the dependency
checks it for every method but GET and HEAD). Headers a page cannot set cross-site without
this server's consent (Bearer, X-API-Key) and a token in the URL need no such check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from starlette.requests import HTTPConnection

from comfy_balancer.auth.callers import Forbidden, Unauthorized, presented_secret
from comfy_balancer.lifespan import BalancerState
from comfy_shared.access import TRUSTED, Caller, Scope
from comfy_shared.errors import ComfyStackError

SAFE_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class GatewayUser:
    caller: Caller
    ambient: bool = False
    """Recognised by a credential the browser sends on its own (cookie, Basic): changes must
    come from the same site."""

    @property
    def tenant(self) -> str:
        """Everything the gateway shows and changes is this tenant's (an admin key too: the
        gateway is a per-user ComfyUI, not an admin console)."""
        return self.caller.tenant


Resolver = Callable[[HTTPConnection, BalancerState, Scope], Awaitable[GatewayUser | None]]
"""Recognises the user of a request, or returns None to let the next resolver try; raises
Unauthorized for credentials it owns that are wrong, Forbidden without the scope."""


class CrossSiteRequest(ComfyStackError):
    def __init__(self, why: str) -> None:
        super().__init__(f"refused a change requested from another site: {why}")


class IdentityChain:
    def __init__(self) -> None:
        self._resolvers: list[Resolver] = [credentials_user]

    def prepend(self, resolver: Resolver) -> None:
        """Try ``resolver`` before the ones already there (a session cookie before keys)."""
        self._resolvers.insert(0, resolver)

    async def resolve(self, connection: HTTPConnection, needs: Scope) -> GatewayUser:
        state: BalancerState = connection.app.state.balancer
        if not state.auth.enabled:
            return GatewayUser(TRUSTED)
        for resolver in self._resolvers:
            if (user := await resolver(connection, state, needs)) is not None:
                return user
        raise Unauthorized("an API key is required (Basic, Bearer, X-API-Key or ?token=)")


def install_identity(app: FastAPI) -> IdentityChain:
    chain = IdentityChain()
    app.state.gateway_identity = chain
    return chain


def identity_chain(app: FastAPI) -> IdentityChain:
    """The app's chain (the sign-in engineer's hook: ``identity_chain(app).prepend(...)``)."""
    chain: IdentityChain = app.state.gateway_identity
    return chain


async def credentials_user(
    connection: HTTPConnection, state: BalancerState, needs: Scope
) -> GatewayUser | None:
    secret = presented_secret(connection) or connection.query_params.get("token")
    if not secret:
        return None
    caller = await state.auth.caller(secret, needs=needs)
    scheme = connection.headers.get("authorization", "").partition(" ")[0].lower()
    return GatewayUser(caller, ambient=scheme == "basic")


async def user_of(connection: HTTPConnection, needs: Scope = Scope.READ) -> GatewayUser:
    """The user of a request or WebSocket (no cross-site check: see :func:`gateway_user`)."""
    chain: IdentityChain = connection.app.state.gateway_identity
    user = await chain.resolve(connection, needs)
    if not user.caller.may(needs):
        raise Forbidden(needs)
    return user


async def gateway_user(request: Request) -> GatewayUser:
    """Reading needs the ``read`` scope, changing ``submit`` and the same site when ambient."""
    changes = request.method not in SAFE_METHODS
    user = await user_of(request, Scope.SUBMIT if changes else Scope.READ)
    if changes:
        refuse_cross_site(request, user)
    return user


UserOf = Annotated[GatewayUser, Depends(gateway_user)]


def refuse_cross_site(connection: HTTPConnection, user: GatewayUser) -> None:
    """Raise CrossSiteRequest for an ambient user's request a browser marks as cross-site
    (``Sec-Fetch-Site``), or whose ``Origin`` is not this host. Clients that are no browser
    send neither header and pass."""
    if not user.ambient:
        return
    headers = connection.headers
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise CrossSiteRequest("Sec-Fetch-Site says cross-site")
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        raise CrossSiteRequest(f"Origin {origin!r} is not this host")
