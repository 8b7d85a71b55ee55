"""Fixtures for the ComfyUI client tests: a transport that answers from recorded captures."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from comfy_shared.comfyui import ComfyClient
from comfy_testkit.captures import load_capture

BASE_URL = "http://comfy.test:8188"


class CaptureTransport(httpx.MockTransport):
    """Answers each request with the first capture whose request matches it.

    Matching: same method and path; same query once empty values are dropped (ComfyUI reads a
    missing ``subfolder`` as ""); every key of the recorded JSON body or multipart form equal
    in ours (our client may add keys the recording lacked, such as ``prompt_id``).
    """

    def __init__(self, captures: Iterable[dict[str, Any]]) -> None:
        self.captures = list(captures)
        self.requests: list[httpx.Request] = []
        super().__init__(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for capture in self.captures:
            if _matches(capture["request"], request):
                return _response(capture["response"])
        raise AssertionError(f"no capture for {request.method} {request.url}")

    def json_bodies(self) -> list[Any]:
        return [
            json.loads(request.content) if request.content else None for request in self.requests
        ]


def _matches(recorded: dict[str, Any], request: httpx.Request) -> bool:
    url = urlsplit(recorded["path"])
    return (
        recorded["method"] == request.method
        and url.path == request.url.raw_path.decode().partition("?")[0]
        and _query(url.query) == _query(request.url.query.decode())
        and _covers(recorded.get("body"), _json_body(request))
        and _covers_form(recorded.get("multipart"), request)
    )


def _query(query: str) -> dict[str, str]:
    return {key: value for key, value in parse_qsl(query, keep_blank_values=True) if value}


def _json_body(request: httpx.Request) -> Any:
    if "json" not in request.headers.get("content-type", ""):
        return None
    return json.loads(request.content)


def _covers(recorded: Any, sent: Any) -> bool:
    if recorded is None:
        return True
    return isinstance(sent, dict) and all(sent.get(key) == value for key, value in recorded.items())


def _covers_form(recorded: dict[str, Any] | None, request: httpx.Request) -> bool:
    if recorded is None:
        return True
    sent = _multipart(request)
    return all(sent.get(key) == _expected_part(value) for key, value in recorded.items())


def _expected_part(value: Any) -> Any:
    if isinstance(value, dict):  # a file part
        return (value["filename"], base64.b64decode(value["base64"]))
    return value


def _multipart(request: httpx.Request) -> dict[str, Any]:
    header = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(header + request.read())
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        filename = part.get_filename()
        fields[str(name)] = (filename, payload) if filename else payload.decode()
    return fields


def _response(recorded: dict[str, Any]) -> httpx.Response:
    # Content-Length is recomputed: re-serialised JSON need not match the recorded bytes.
    headers = {k: v for k, v in recorded["headers"].items() if k.lower() != "content-length"}
    body = recorded["body"]
    if isinstance(body, dict) and body.get("_binary"):
        content = base64.b64decode(body["base64"])
    elif "json" in headers.get("Content-Type", ""):
        content = json.dumps(body).encode()
    else:
        content = str(body).encode()
    return httpx.Response(recorded["status"], headers=headers, content=content)


def synthetic(
    method: str, path: str, status: int, body: Any, *, content_type: str = "application/json"
) -> dict[str, Any]:
    """A capture-shaped exchange for cases the recording lacks."""
    headers = {"Content-Type": content_type} if content_type else {}
    return {
        "request": {"method": method, "path": path},
        "response": {"status": status, "headers": headers, "body": body},
    }


TROUBLE = "500 Internal Server Error\n\nServer got itself in trouble"


def trouble(method: str, path: str) -> dict[str, Any]:
    """aiohttp's answer when a ComfyUI handler raises."""
    return synthetic(method, path, 500, TROUBLE, content_type="text/plain; charset=utf-8")


ClientFactory = Callable[..., tuple[ComfyClient, CaptureTransport]]


# Helpers as fixtures: with --import-mode=importlib test modules cannot import conftest.
@pytest.fixture(name="synthetic")
def synthetic_fixture() -> Callable[..., dict[str, Any]]:
    return synthetic


@pytest.fixture(name="trouble")
def trouble_fixture() -> Callable[[str, str], dict[str, Any]]:
    return trouble


@pytest.fixture
async def comfy_for() -> AsyncIterator[ClientFactory]:
    """``comfy_for("09-post-prompt-ok", synthetic(...))`` → (client, transport)."""
    clients: list[ComfyClient] = []

    def make(*captures: str | dict[str, Any]) -> tuple[ComfyClient, CaptureTransport]:
        loaded = [load_capture(c) if isinstance(c, str) else c for c in captures]
        transport = CaptureTransport(loaded)
        clients.append(ComfyClient(BASE_URL, transport=transport))
        return clients[-1], transport

    yield make
    for client in clients:
        await client.aclose()
