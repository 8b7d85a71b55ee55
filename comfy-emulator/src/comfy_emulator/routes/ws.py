"""GET /ws (and /api/ws): ComfyUI's WebSocket session.

- `?clientId=X` makes X the sid; otherwise a fresh `uuid4().hex` is used.
- The first frame is `status` with the queue info and the sid. If this sid owns the running
  prompt and a node is executing, `executing{node}` (without prompt_id) follows.
- If the client's first text frame is `feature_flags`, the server answers with its own flags;
  every other client frame is ignored.
- Reconnect quirk, kept on purpose: a new socket with the same clientId replaces the old one,
  and when the old one closes later its cleanup removes the sid, silencing the new socket.
"""

from __future__ import annotations

import json
import uuid

import aiohttp
from aiohttp import web

from comfy_emulator.config import EmulatorConfig
from comfy_emulator.hub import Connection, SocketHub
from comfy_emulator.routes import Route, emulator_of
from comfy_emulator.routes.info import server_features


async def websocket(request: web.Request) -> web.WebSocketResponse:
    emulator = emulator_of(request)
    state = emulator.state
    hub = state.hub
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sid = request.rel_url.query.get("clientId", "")
    if sid:
        hub.connections.pop(sid, None)
    else:
        sid = uuid.uuid4().hex
    connection = Connection(ws, request.transport)
    hub.connections[sid] = connection
    try:
        await hub.send_now("status", {"status": emulator.queue_info(), "sid": sid}, sid)
        if state.client_id == sid and state.last_node_id is not None:
            await hub.send_now("executing", {"node": state.last_node_id}, sid)
        await _read_frames(ws, connection, emulator.config, hub, sid)
    finally:
        hub.connections.pop(sid, None)
    return ws


async def _read_frames(
    ws: web.WebSocketResponse,
    connection: Connection,
    config: EmulatorConfig,
    hub: SocketHub,
    sid: str,
) -> None:
    first = True
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        try:
            data = json.loads(message.data)
        except json.JSONDecodeError:
            continue
        if first and isinstance(data, dict) and data.get("type") == "feature_flags":
            flags = data.get("data", {})
            connection.feature_flags = flags if isinstance(flags, dict) else {}
            await hub.send_now("feature_flags", server_features(config), sid)
        first = False


ROUTES: list[Route] = [("GET", "/ws", websocket)]
