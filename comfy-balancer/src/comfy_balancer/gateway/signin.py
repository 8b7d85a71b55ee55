"""The sign-in page: a browser user pastes an API key once and gets a session cookie.

- ``GET /signin``: the form (or straight on to ``/`` when already signed in).
  ``?next=/console`` leads to the console instead (the only other page it leads to).
- ``POST /signin`` (form fields ``key`` and ``next``): checks the key as every request would,
  opens a session (see :mod:`comfy_balancer.auth.sessions`) and answers 303 to ``/`` (or
  ``next``) with the cookie:
  ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's request carries
  it), ``Secure`` over https (``--ui-cookie-secure``), ``Path=/``, for ``--ui-session-s``.
- ``GET /signout``: who is signed in, with a button; ``POST /signout`` ends the session.

With authentication off there is nothing to sign in to: the page says so.

``SameSite=Strict`` has one cost: a link from another site (a course page) to ``/`` arrives
without the cookie, and so does the redirect that follows. The page then reloads itself once
(a navigation this site starts, which carries the cookie) before showing the form.
"""

from __future__ import annotations

import html
from functools import cache
from importlib.resources import files
from string import Template
from typing import Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection

from comfy_balancer.auth.callers import Forbidden, Unauthorized
from comfy_balancer.auth.keys import secret_hash
from comfy_balancer.auth.sessions import (
    SESSION_COOKIE,
    BrowserSession,
    require_same_origin,
    session_caller,
    sessions_of,
)
from comfy_balancer.deps import State
from comfy_balancer.gateway.identity import GatewayUser
from comfy_balancer.lifespan import BalancerState
from comfy_shared.access import Scope

MAX_FORM_BYTES: Final = 8192
PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


LANDINGS: Final = ("/", "/console")
"""Where signing in may lead (``next``): a fixed list, so a link cannot send a user who just
signed in to another site."""


@router.get("/signin")
async def signin_page(request: Request, state: State) -> Response:
    landing = _landing(request.query_params.get("next"), state)
    if not state.auth.enabled:
        return _auth_off_page(landing)
    if await _session_of(request, state) is not None:
        return _to(landing)
    if (
        request.headers.get("sec-fetch-site") == "cross-site"
        and "checked" not in request.query_params
    ):
        head = _REFRESH_ONCE.substitute(next=landing)
        return _page("Signing in", "<p>One moment...</p>", head=head)
    return _form_page(landing)


@router.post("/signin")
async def sign_in(request: Request, state: State) -> Response:
    body = await request.body()
    landing = _landing(_form_field(body, "next"), state)
    if not state.auth.enabled:
        return _to(landing)
    require_same_origin(request)
    key = _form_field(body, "key").strip()
    try:
        caller = await state.auth.caller(key or None, needs=Scope.READ)
    except Unauthorized:
        return _form_page(landing, "That key is unknown or revoked.", status=401)
    except Forbidden:
        return _form_page(
            landing, "That key may not read: ask for a key with the read scope.", status=403
        )
    session_id = await sessions_of(state).open(secret_hash(key), caller)
    response = _to(landing)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=state.settings.ui_session_s,
        path="/",
        secure=state.settings.ui_cookie_secure == "always" or request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/signout")
async def signout_page(request: Request, state: State) -> Response:
    session = await _session_of(request, state)
    if session is None:
        return _page(
            "Signed out", '<h1>Not signed in</h1><a class="button" href="/signin">Sign in</a>'
        )
    who = html.escape(session.tenant)
    key = f" (key <code>{html.escape(session.key_id)}</code>)" if session.key_id else ""
    body = (
        f"<h1>Signed in as {who}</h1><p>{key.strip()}</p>"
        '<form method="post" action="/signout"><button type="submit">Sign out</button></form>'
        '<p class="note"><a href="/">Back to ComfyUI</a></p>'
    )
    return _page("Sign out", body)


@router.post("/signout")
async def sign_out(request: Request, state: State) -> Response:
    require_same_origin(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await sessions_of(state).close(session_id)
    response = _to("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def _session_of(request: Request, state: State) -> BrowserSession | None:
    """The request's live session whose key still works, else None."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id or not state.auth.enabled:
        return None
    session = await sessions_of(state).find(session_id)
    if session is None:
        return None
    try:
        await state.auth.caller_for_digest(session.secret_sha256, needs=Scope.READ)
    except (Unauthorized, Forbidden):
        return None
    return session


def _landing(asked: str | None, state: State) -> str:
    """``next`` when it is one of the pages signing in leads to, else this server's main
    page: ComfyUI's, or the console where ComfyUI's frontend is off."""
    if asked in LANDINGS:
        return asked
    return "/" if state.settings.ui else "/console"


def _form_field(body: bytes, name: str) -> str:
    if len(body) > MAX_FORM_BYTES:
        return ""
    values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
    return values.get(name, [""])[0]


_REFRESH_ONCE: Final = Template(
    '<meta http-equiv="refresh" content="0; url=/signin?checked=1&amp;next=$next">'
)
_PAGE_NAMES: Final = {"/": "ComfyUI", "/console": "the console"}


def _form_page(landing: str, error: str | None = None, *, status: int = 200) -> HTMLResponse:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        f"<h1>Sign in to {_PAGE_NAMES[landing]}</h1>"
        f"{shown}"
        '<form method="post" action="/signin">'
        f'<input type="hidden" name="next" value="{html.escape(landing)}">'
        '<label for="key">API key</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" '
        'required autofocus spellcheck="false">'
        '<button type="submit">Sign in</button>'
        "</form>"
        '<p class="note">Paste the key you were given. The browser keeps a session cookie, '
        "never the key; sign out at <code>/signout</code>.</p>"
    )
    return _page("Sign in", body, status=status)


def _auth_off_page(landing: str) -> HTMLResponse:
    body = (
        "<h1>No sign-in needed</h1>"
        "<p>Authentication is off on this server: everyone uses it as one user.</p>"
        f'<a class="button" href="{landing}">Open {_PAGE_NAMES[landing]}</a>'
    )
    return _page("Sign in", body)


def _page(title: str, body: str, *, status: int = 200, head: str = "") -> HTMLResponse:
    text = _template().substitute(title=html.escape(title), body=body, head=head)
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


def _to(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


@cache
def _template() -> Template:
    page = files("comfy_balancer.gateway") / "signin_pages" / "page.html"
    return Template(page.read_text(encoding="utf-8"))


async def session_user(
    conn: HTTPConnection, state: BalancerState, needs: Scope
) -> GatewayUser | None:
    """The gateway's resolver of a browser session (tried before keys): its changes must
    come from the same site, as the cookie travels on its own."""
    caller = await session_caller(conn, sessions=sessions_of(state), auth=state.auth, needs=needs)
    return GatewayUser(caller, ambient=True) if caller is not None else None
