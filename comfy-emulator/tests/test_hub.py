"""The outbound queue when a socket dies under a client subscribed to the logs."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp import web

from comfy_emulator.hub import Connection, SocketHub
from comfy_emulator.logbuffer import LogBuffer, LogEntry


class DeadSocket:
    """A WebSocket whose transport is closing: every send fails at once, without yielding."""

    def __init__(self) -> None:
        self.sends = 0

    async def send_str(self, _: str) -> None:
        self.sends += 1
        raise ConnectionResetError("Cannot write to closing transport")


async def test_a_dead_subscriber_is_dropped_instead_of_feeding_its_own_errors() -> None:
    logs = LogBuffer()
    hub = SocketHub(logs)
    dead = DeadSocket()
    hub.connections["tail"] = Connection(ws=cast(web.WebSocketResponse, dead), transport=None)

    def push_to_subscriber(entries: list[LogEntry]) -> None:  # as /internal/logs/subscribe does
        hub.emit("logs", cast(Any, {"entries": entries}), "tail")

    logs.add_listener(push_to_subscriber)
    hub.start()
    try:
        hub.emit("status", {"status": {}}, "tail")
        await asyncio.wait_for(hub.wait_drained(), timeout=2)
    finally:
        await hub.stop()

    assert "tail" not in hub.connections
    assert dead.sends == 1
    assert [entry["m"] for entry in logs.entries()] == [
        "send error: Cannot write to closing transport\n"
    ]
