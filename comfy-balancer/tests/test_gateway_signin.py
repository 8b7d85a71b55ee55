"""Signing in from a browser on a real balancer: an API key traded for a session cookie, what
the cookie and Redis hold, the origin check on changes, signing out, revoked keys, and a
balancer with authentication off."""

import hashlib
import http.cookies
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from comfy_balancer.auth.callers import Authenticator, Forbidden, Unauthorized
from comfy_balancer.auth.keys import KeyStore, NewKey, secret_hash
from comfy_balancer.auth.sessions import SESSION_COOKIE, SessionStore, session_caller
from comfy_shared.access import TRUSTED, Caller, KeyLimits, Scope
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.browser_session import signed_in_client
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import ADMIN_KEY, RunningComponent
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()
SESSION_S = 3600


# --- the session, resolved as a key would be (what the WebSocket and HTTP routes call) ------


def connection(cookie: str | None) -> HTTPConnection:
    headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())] if cookie else []
    return HTTPConnection({"type": "http", "method": "GET", "path": "/ws", "headers": headers})


async def test_a_session_resolves_to_the_caller_its_key_does(redis: Redis) -> None:
    store = KeyStore(redis, KEYS)
    auth = Authenticator(enabled=True, admin_secret=ADMIN_KEY, store=store)
    sessions = SessionStore(redis, KEYS, lifetime_s=60)
    made = await store.create(NewKey(name="ann", tenant="class-a", limits=KeyLimits(max_running=1)))
    by_key = await auth.caller(made.key, needs=Scope.READ)
    session_id = await sessions.open(secret_hash(made.key), by_key)
    admin_session = await sessions.open(
        secret_hash(ADMIN_KEY), await auth.caller(ADMIN_KEY, needs=Scope.ADMIN)
    )

    async def resolved(cookie: str | None, needs: Scope = Scope.SUBMIT) -> Caller | None:
        return await session_caller(connection(cookie), sessions=sessions, auth=auth, needs=needs)

    assert await resolved(session_id) == by_key
    assert await resolved(admin_session, Scope.ADMIN) == await auth.caller(
        ADMIN_KEY, needs=Scope.ADMIN
    )
    assert await resolved(None) is None
    assert await resolved("made-up") is None
    with pytest.raises(Forbidden):
        await resolved(session_id, Scope.ADMIN)
    await sessions.close(session_id)
    assert await resolved(session_id) is None
    other = await sessions.open(secret_hash(made.key), by_key)
    await store.revoke(made.id)
    uncached = Authenticator(enabled=True, admin_secret=ADMIN_KEY, store=store)
    with pytest.raises(Unauthorized):  # the session outlives its key by nothing
        await session_caller(connection(other), sessions=sessions, auth=uncached, needs=Scope.READ)
    open_auth = Authenticator(enabled=False, admin_secret=None, store=store)
    assert await open_auth.caller_for_digest("anything", needs=Scope.ADMIN) == TRUSTED


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster((), balancer_args=["--ui-session-s", str(SESSION_S)])


@pytest.fixture
async def browser(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no credential: what a browser is before it signs in."""
    async with httpx.AsyncClient(base_url=cluster.balancer.url, timeout=15) as client:
        yield client


def set_cookie(answer: httpx.Response) -> http.cookies.Morsel[str]:
    cookie: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    cookie.load(answer.headers["set-cookie"])
    return cookie[SESSION_COOKIE]


def same_origin(cluster: Cluster) -> dict[str, str]:
    return {"Origin": cluster.balancer.url}


async def test_signing_in_sets_a_session_cookie_that_is_not_the_key(
    cluster: Cluster, keys: KeyClients, browser: httpx.AsyncClient, redis: Redis
) -> None:
    alice = await keys.make("alice")
    secret = alice.key["key"]

    answer = await browser.post("/signin", data={"key": secret}, headers=same_origin(cluster))

    assert (answer.status_code, answer.headers["location"]) == (303, "/")
    cookie = set_cookie(answer)
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert (cookie["path"], cookie["max-age"]) == ("/", str(SESSION_S))
    assert not cookie["secure"]  # plain http: a Secure cookie would never come back
    assert secret not in answer.headers["set-cookie"]
    assert len(cookie.value) == 43
    session_key = KEYS.ui_session(hashlib.sha256(cookie.value.encode()).hexdigest())
    assert await redis.keys(f"{KEYS.prefix}:ui:session:*") == [session_key]
    assert SESSION_S - 5 <= await redis.ttl(session_key) <= SESSION_S
    stored = await redis.get(session_key)
    assert stored is not None
    assert cookie.value not in stored
    assert secret not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    session = json.loads(stored)
    assert (session["tenant"], session["key_id"]) == ("alice", alice.key["id"])


async def test_the_cookie_stands_for_the_key_on_every_user_route(
    cluster: Cluster, keys: KeyClients
) -> None:
    alice = await keys.make("alice")
    async with signed_in_client(cluster.balancer.url, alice.key["key"]) as cookie:
        written = await cookie.post("/api/settings/Comfy.Locale", content=b'"fr"')
        saved = await cookie.post("/api/userdata/workflows%2Fa.json", content=b"{}")
        page = await cookie.get("/")

    assert (written.status_code, saved.status_code) == (200, 200)
    assert (await alice.get("/api/settings")).json() == {"Comfy.Locale": "fr"}
    assert (await alice.get("/api/userdata?dir=workflows")).json() == ["a.json"]
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<div id="vue-app">' in page.text


async def test_a_session_has_the_scopes_of_its_key(cluster: Cluster, keys: KeyClients) -> None:
    viewer = await keys.make("viewer", scopes=["read"])
    async with signed_in_client(cluster.balancer.url, viewer.key["key"]) as cookie:
        read = await cookie.get("/api/settings")
        written = await cookie.post("/api/settings/Comfy.X", content=b"1")

    assert read.status_code == 200
    assert (written.status_code, written.json()["code"]) == (403, "forbidden")


async def test_the_admin_key_signs_in_as_the_admin_tenant(cluster: Cluster) -> None:
    async with signed_in_client(cluster.balancer.url, ADMIN_KEY) as cookie:
        await cookie.post("/api/settings/Comfy.X", content=b"1")
        page = await cookie.get("/signout")

    assert "Signed in as admin" in page.text
    async with httpx.AsyncClient(
        base_url=cluster.balancer.url, headers={"X-API-Key": ADMIN_KEY}
    ) as admin:
        assert (await admin.get("/api/settings")).json() == {"Comfy.X": 1}


async def test_an_unknown_key_gets_the_form_again_and_no_cookie(
    cluster: Cluster, browser: httpx.AsyncClient
) -> None:
    for key in ("csk_kdeadbeef00_wrongwrongwrongwrongwrongwrong", "", " "):
        answer = await browser.post("/signin", data={"key": key}, headers=same_origin(cluster))

        assert answer.status_code == 401, key
        assert "unknown or revoked" in answer.text
        assert "set-cookie" not in answer.headers
        assert answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


NOT_THIS_ORIGIN = [
    {},  # no Origin, no Sec-Fetch-Site: not a page of this server
    {"Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
]


async def test_a_change_carried_by_the_cookie_alone_must_come_from_this_origin(
    cluster: Cluster, keys: KeyClients
) -> None:
    alice = await keys.make("alice")
    async with signed_in_client(cluster.balancer.url, alice.key["key"]) as cookie:
        cookie.headers.pop("Origin")
        for headers in NOT_THIS_ORIGIN:
            refused = [
                await cookie.post("/api/settings/Comfy.X", content=b"1", headers=headers),
                await cookie.post("/api/userdata/a.json", content=b"x", headers=headers),
                await cookie.delete("/api/userdata/a.json", headers=headers),
                await cookie.post("/signout", headers=headers),
            ]
            reading = await cookie.get("/api/settings", headers=headers)

            assert [(r.status_code, r.json()["code"]) for r in refused] == [
                (403, "cross_site_request")
            ] * 4, headers
            assert reading.status_code == 200
        from_the_page = await cookie.post(
            "/api/settings/Comfy.X", content=b"2", headers={"Sec-Fetch-Site": "same-origin"}
        )

    assert from_the_page.status_code == 200
    assert (await alice.get("/api/settings")).json() == {"Comfy.X": 2}
    assert (await alice.get("/api/userdata?dir=x&recurse=true")).json() == []


async def test_the_cookie_stands_for_the_key_on_the_api_too(
    cluster: Cluster, keys: KeyClients
) -> None:
    """What the console does: /api/v1 with the session alone, its changes from this origin
    only, and no more than its key may."""
    alice = await keys.make("alice")
    generate = {"workflow": "demo", "params": {"width": 64}}
    async with signed_in_client(cluster.balancer.url, alice.key["key"]) as cookie:
        cookie.headers.pop("Origin")
        refused = [
            await cookie.post("/api/v1/generate", json=generate, headers=headers)
            for headers in NOT_THIS_ORIGIN
        ]
        made = await cookie.post(
            "/api/v1/generate", json=generate, headers={"Sec-Fetch-Site": "same-origin"}
        )
        listed = await cookie.get("/api/v1/tasks")
        not_admin = await cookie.get("/api/v1/keys")
    async with signed_in_client(cluster.balancer.url, ADMIN_KEY) as admin:
        every_key = await admin.get("/api/v1/keys")
    async with httpx.AsyncClient(base_url=cluster.balancer.url) as nobody:
        anonymous = await nobody.get("/api/v1/tasks")

    assert [(r.status_code, r.json()["code"]) for r in refused] == [
        (403, "cross_site_request")
    ] * len(NOT_THIS_ORIGIN)
    assert made.status_code == 202, made.text
    assert [task["id"] for task in listed.json()["tasks"]] == [made.json()["id"]]
    assert (not_admin.status_code, not_admin.json()["code"]) == (403, "forbidden")
    assert alice.key["id"] in [key["id"] for key in every_key.json()]
    assert anonymous.status_code == 401


async def test_signing_in_itself_must_come_from_this_origin(
    cluster: Cluster, keys: KeyClients, browser: httpx.AsyncClient
) -> None:
    """Else another site could sign a visitor in as its own user (login CSRF)."""
    alice = await keys.make("alice")

    answer = await browser.post(
        "/signin", data={"key": alice.key["key"]}, headers={"Origin": "http://evil.example"}
    )

    assert (answer.status_code, answer.json()["code"]) == (403, "cross_site_request")
    assert "set-cookie" not in answer.headers


async def test_signing_out_ends_the_session_everywhere(
    cluster: Cluster, keys: KeyClients, redis: Redis
) -> None:
    alice = await keys.make("alice")
    async with signed_in_client(cluster.balancer.url, alice.key["key"]) as cookie:
        session_id = cookie.cookies[SESSION_COOKIE]
        answer = await cookie.post("/signout")
        cleared = set_cookie(answer)
        cookie.cookies.set(SESSION_COOKIE, session_id)  # a copy of the cookie kept elsewhere
        after = await cookie.get("/api/settings")
        page = await cookie.get("/", follow_redirects=False)

    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")
    assert (cleared.value, cleared["max-age"]) == ("", "0")
    assert await redis.keys(f"{KEYS.prefix}:ui:session:*") == []
    assert after.status_code == 401
    assert (page.status_code, page.headers["location"]) == (303, "/signin")


async def test_revoking_the_key_ends_its_sessions(cluster: Cluster, keys: KeyClients) -> None:
    alice = await keys.make("alice")
    async with signed_in_client(cluster.balancer.url, alice.key["key"]) as cookie:
        assert (await cookie.get("/api/settings")).status_code == 200
        assert (await cluster.api.delete(f"/api/v1/keys/{alice.key['id']}")).status_code == 200

        async def refused() -> bool:
            return (await cookie.get("/api/settings")).status_code == 401

        await wait_for_condition(refused, timeout_s=5, what="the revoked key's session refused")
        page = await cookie.get("/signin")

    assert "Sign in to ComfyUI" in page.text


async def test_the_ui_sends_a_browser_that_is_not_signed_in_to_the_sign_in_page(
    cluster: Cluster, keys: KeyClients, browser: httpx.AsyncClient
) -> None:
    alice = await keys.make("alice")

    root = await browser.get("/")
    index = await browser.get("/index.html")
    form = await browser.get("/signin")
    with_key = await alice.get("/")

    assert [(r.status_code, r.headers["location"]) for r in (root, index)] == [(303, "/signin")] * 2
    assert form.status_code == 200
    assert '<input id="key" name="key" type="password"' in form.text
    assert with_key.status_code == 200  # a key in a header opens it too


async def test_signed_in_the_sign_in_page_leads_on_to_the_ui(
    cluster: Cluster, keys: KeyClients
) -> None:
    alice = await keys.make("alice")
    async with signed_in_client(cluster.balancer.url, alice.key["key"]) as cookie:
        page = await cookie.get("/signin")
        signout = await cookie.get("/signout")

    assert (page.status_code, page.headers["location"]) == (303, "/")
    assert "Signed in as alice" in signout.text
    assert alice.key["id"] in signout.text


async def test_a_link_from_another_site_reloads_the_page_once_to_find_the_cookie(
    browser: httpx.AsyncClient,
) -> None:
    """SameSite=Strict: a navigation another site started arrives without the cookie."""
    cross_site = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}

    first = await browser.get("/signin", headers=cross_site)
    checked = await browser.get("/signin?checked=1", headers=cross_site)

    assert '<meta http-equiv="refresh" content="0; url=/signin?checked=1&amp;next=/">' in first.text
    assert "Sign in to ComfyUI" not in first.text
    assert "Sign in to ComfyUI" in checked.text


async def test_the_cookie_is_secure_when_asked(
    cluster: Cluster, keys: KeyClients, start_balancer: Callable[..., RunningComponent]
) -> None:
    alice = await keys.make("alice")
    secure = start_balancer("balancer-tls", extra_args=["--ui-cookie-secure", "always"])

    async with httpx.AsyncClient(base_url=secure.url) as browser:
        answer = await browser.post(
            "/signin", data={"key": alice.key["key"]}, headers={"Origin": secure.url}
        )

    assert set_cookie(answer)["secure"] is True


async def test_with_authentication_off_the_ui_is_open(
    start_balancer: Callable[..., RunningComponent],
) -> None:
    open_balancer = start_balancer("balancer-open", admin_key=None)

    async with httpx.AsyncClient(base_url=open_balancer.url) as anyone:
        root = await anyone.get("/")
        signin = await anyone.get("/signin")
        written = await anyone.post(
            "/api/settings/Comfy.X", content=b"1", headers={"Origin": open_balancer.url}
        )
        read = await anyone.get("/api/settings")

    assert root.status_code == 200
    assert "No sign-in needed" in signin.text
    assert written.status_code == 200
    assert read.json() == {"Comfy.X": 1}
