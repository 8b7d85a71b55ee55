"""A service started with an internal token answers its API only to callers that carry it;
its probes stay open, and without a token it stays open as a single node."""

import re
import uuid
from typing import Any

import httpx
import pytest
from loguru import logger

from comfy_service.main import create_app
from comfy_service.settings import ServiceSettings
from comfy_testkit import graphs
from comfy_testkit.api import get_task, submit, wait_for_status, wait_until_finished
from comfy_testkit.plugin import ServiceFactory
from comfy_testkit.stack import TEST_INTERNAL_TOKEN, RunningComponent

WRONG_CREDENTIALS = [
    pytest.param({}, id="none"),
    pytest.param({"Authorization": "Bearer " + "x" * 43}, id="wrong-token"),
    pytest.param({"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}x"}, id="token-plus-one"),
    pytest.param({"Authorization": f"Bearer {TEST_INTERNAL_TOKEN[:-1]}"}, id="token-minus-one"),
    pytest.param({"Authorization": f"Basic {TEST_INTERNAL_TOKEN}"}, id="other-scheme"),
    pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
]
PLACEHOLDERS = {"task_id": "some-task", "index": "0", "name": "demo", "folder": "output"}


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def api_routes(service: RunningComponent) -> list[tuple[str, str]]:
    """Every (method, path) of the service's API, from its own OpenAPI document."""
    async with httpx.AsyncClient(base_url=service.url) as anonymous:
        paths = (await anonymous.get("/openapi.json")).json()["paths"]
    routes = [
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: PLACEHOLDERS[m.group(1)], path))
        for path, methods in paths.items()
        if path.startswith("/api/v1/")
        for method in methods
    ]
    assert len(routes) >= 8, routes  # generate, tasks, outputs, events, logs, workflows ...
    return routes


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.json()["code"] == "unauthorized"
    assert response.json()["type"] == "validation"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("credentials", WRONG_CREDENTIALS)
async def test_every_api_route_refuses_a_caller_without_the_token(
    service: RunningComponent, credentials: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=service.url, headers=credentials) as caller:
        for method, path in await api_routes(service):
            body = {"prompt": graphs.solid_image(f"r-{fresh()}")} if method == "POST" else None
            assert_refused(await caller.request(method, path, json=body))


async def test_a_refused_placement_and_cancel_change_nothing(
    service: RunningComponent, api: httpx.AsyncClient
) -> None:
    running = await submit(api, graphs.txt2img(f"t-{fresh()}", steps=40))
    await wait_for_status(api, running["id"], {"running"})
    async with httpx.AsyncClient(base_url=service.url) as stranger:
        assert_refused(await stranger.delete(f"/api/v1/tasks/{running['id']}"))
        placed = await stranger.post(
            "/api/v1/generate",
            json={"task_id": "smuggled", "prompt": graphs.solid_image(f"s-{fresh()}")},
        )
        assert_refused(placed)

    assert (await wait_until_finished(api, running["id"]))["status"] == "succeeded"
    assert (await api.get("/api/v1/tasks/smuggled")).status_code == 404


async def test_with_the_token_placing_reading_and_cancelling_work(
    api: httpx.AsyncClient,
) -> None:
    done = await submit(api, graphs.solid_image(f"d-{fresh()}"))
    finished = await wait_until_finished(api, done["id"])
    assert finished["status"] == "succeeded"
    assert (await api.get(finished["outputs"][0]["url"])).content.startswith(b"\x89PNG")
    running = await submit(api, graphs.txt2img(f"c-{fresh()}", steps=200))
    await wait_for_status(api, running["id"], {"running"})
    cancelled = await api.delete(f"/api/v1/tasks/{running['id']}")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")


async def test_probes_and_the_api_description_stay_open(service: RunningComponent) -> None:
    async with httpx.AsyncClient(base_url=service.url) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        ready = await anonymous.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        assert (await anonymous.get("/openapi.json")).status_code == 200
        # Outside /api/v1, unknown paths are plain 404s, not a hint that a token exists.
        assert (await anonymous.get("/api/v10/generate")).status_code == 404


async def test_without_a_token_the_api_is_open(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    service = start_service(emulator.url, internal_token=None)
    assert service.auth_headers == {}
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as anyone:
        task = await submit(anyone, graphs.solid_image(f"o-{fresh()}"))
        assert (await wait_until_finished(anyone, task["id"]))["status"] == "succeeded"
        assert (await get_task(anyone, task["id"]))["outputs"]


async def test_the_token_appears_in_no_log_line(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    service = start_service(emulator.url, extra_args=["--log-level", "TRACE"])
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as api:
        task = await submit(api, graphs.solid_image(f"l-{fresh()}"))
        await wait_until_finished(api, task["id"])
        await api.get(f"/api/v1/tasks/{task['id']}/logs")
    service.stop()

    output = service.process.output()
    assert task["id"] in output  # the log did record the requests and the run, at TRACE
    assert "ASGI [" in output
    assert TEST_INTERNAL_TOKEN not in output


def open_warnings(**settings: Any) -> list[str]:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        create_app(ServiceSettings(_env_file=None, **settings))
    finally:
        logger.remove(sink)
    return [message for message in messages if "open to anyone" in message]


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("gpu-7.internal", None, True),
        ("0.0.0.0", TEST_INTERNAL_TOKEN, False),
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
    # The token is random: an id made of it would differ between two collections.
    ids=lambda value: "token" if value is TEST_INTERNAL_TOKEN else None,
)
def test_a_service_open_beyond_this_machine_warns_at_start(
    host: str, token: str | None, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMFY_INTERNAL_TOKEN", raising=False)
    monkeypatch.delenv("COMFY_SERVICE_INTERNAL_TOKEN", raising=False)
    assert bool(open_warnings(host=host, internal_token=token)) is warned
