"""App-level behaviour: origin check middleware and the home page."""

from __future__ import annotations

from typing import Any

import pytest

from comfy_emulator import RunningEmulator
from comfy_emulator.app import origin_rejected
from comfy_emulator.testing import EmulatorClient


@pytest.mark.parametrize(
    ("host", "origin", "rejected"),
    [
        ("127.0.0.1:8188", "http://evil.example", True),
        ("127.0.0.1:8188", "http://127.0.0.1:8188", False),
        ("localhost:8188", "http://localhost:9999", True),
        ("localhost", "http://localhost:3000", False),  # no port on one side: names only
        ("comfy.example:8188", "http://evil.example", False),  # not loopback: not checked
    ],
)
def test_origin_decision(host: str, origin: str, rejected: bool) -> None:
    assert origin_rejected(host, origin) is rejected


async def test_mismatched_origin_gets_an_empty_403(client: EmulatorClient) -> None:
    async with client.session.get(
        client.base_url + "/queue", headers={"Origin": "http://evil.example"}
    ) as response:
        assert (response.status, await response.read()) == (403, b"")
    async with client.session.options(client.base_url + "/prompt") as response:
        assert (response.status, await response.read()) == (200, b"")


async def test_origin_check_can_be_disabled(start: Any) -> None:
    running: RunningEmulator = await start(origin_check=False)
    async with (
        EmulatorClient(running.url) as client,
        client.session.get(
            client.base_url + "/queue", headers={"Origin": "http://evil.example"}
        ) as response,
    ):
        assert response.status == 200


async def test_home_page(client: EmulatorClient) -> None:
    async with client.session.get(client.base_url + "/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
