"""``GET /ws?clientId=`` and ``/api/ws``: ComfyUI's WebSocket, served by the balancer for
the whole fleet (what the frontend and ComfyUI's scripts listen to).

Handshake, as ComfyUI's (``comfyui-gateway.md`` §2.1):

1. The upgrade is authenticated like any request (``Authorization: Bearer``, HTTP Basic with
   the key as password, which is what ``ws://user:key@host/ws`` sends, ``X-API-Key``) and,
   for browsers, which cannot set headers on a WebSocket, ``?token=<key>``. With
   authentication on, an upgrade without a valid key is refused with 401 (403 without the
   ``read`` scope), before any socket exists. The socket's user is the key's tenant.
2. The first frame is ``status`` with ``sid``: the ``clientId`` asked for, or a new
   ``uuid4().hex``; ``queue_remaining`` is the user's unfinished tasks, fleet-wide.
3. If the client owns a running prompt, ``executing`` with its current node follows.
4. The client's first text frame, if it is ``feature_flags``, is answered with the
   gateway's own flags (``features``); it says whether the client reads type-4 previews,
   and that it is told its waiting prompts' places (``relay``).
   Every other client frame is ignored.

Sockets are kept per connection: a client reconnecting with the same id gets everything,
and the late close of its old socket silences nothing (ComfyUI's quirk is not copied).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, WebSocket
from loguru import logger
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect

from comfy_balancer.auth.callers import Forbidden, Unauthorized
from comfy_balancer.auth.sessions import SESSION_COOKIE, is_same_origin
from comfy_balancer.errors import STATUS_FOR
from comfy_balancer.gateway import relay_messages as messages
from comfy_balancer.gateway.features import server_feature_flags
from comfy_balancer.gateway.identity import user_of
from comfy_balancer.gateway.ws_socket import ClientSocket, close_too_slow
from comfy_balancer.lifespan import BalancerState
from comfy_shared.access import Caller, Scope
from comfy_shared.api.errors import error_response

router = APIRouter(tags=["comfyui"])


@router.websocket("/ws")
@router.websocket("/api/ws")
async def comfy_websocket(websocket: WebSocket) -> None:
    state: BalancerState = websocket.app.state.balancer
    caller = await _caller(websocket, state)
    if caller is None:
        return
    await websocket.accept()
    sid = websocket.query_params.get("clientId") or uuid4().hex
    socket = ClientSocket(caller.tenant, sid, queue_frames=state.settings.ws_queue_frames)
    try:
        await state.gateway.attach(socket)
    except RedisError as exc:
        logger.warning("gateway websocket refused: redis unavailable", error=str(exc))
        state.gateway.detach(socket)
        await websocket.close(1011, "redis unavailable")  # 1011: the server cannot serve it
        return
    try:
        with state.stream_hub.clients.serving("ws"):
            await _serve(websocket, socket, state)
    finally:
        state.gateway.detach(socket)


async def _caller(websocket: WebSocket, state: BalancerState) -> Caller | None:
    """The socket's caller, or None once the upgrade is refused (401/403, as over HTTP)."""
    try:
        user = await user_of(websocket, Scope.READ)
        by_cookie = SESSION_COOKIE in websocket.cookies
        if user.ambient and by_cookie and not is_same_origin(websocket):
            raise Forbidden(Scope.READ)  # a session cookie sent by another site's page
        return user.caller
    except (Unauthorized, Forbidden) as exc:
        mapping = STATUS_FOR[type(exc)]
        headers = mapping.headers(exc) if mapping.headers else None
        refusal = error_response(mapping.status, mapping.code, str(exc), mapping.type, headers)
        await websocket.send_denial_response(refusal)
        return None


async def _serve(websocket: WebSocket, socket: ClientSocket, state: BalancerState) -> None:
    """Write what is queued for the client and read what it says, until either side ends
    (or the client falls too far behind, and is closed)."""
    flags = server_feature_flags(max_upload_bytes=state.settings.max_body_bytes)
    tasks = {
        asyncio.create_task(socket.write_to(websocket), name="gateway-ws-writer"),
        asyncio.create_task(_read_client(websocket, socket, flags), name="gateway-ws-reader"),
        kicked := asyncio.create_task(socket.kicked.wait(), name="gateway-ws-kicked"),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    if kicked in done:
        logger.warning("gateway websocket closed: client too slow", client_id=socket.client_id)
        await close_too_slow(websocket)
    for task in done:
        if not task.cancelled() and isinstance(task.exception(), Exception):
            _log_end(task.exception())


async def _read_client(websocket: WebSocket, socket: ClientSocket, flags: dict[str, Any]) -> None:
    """Only the client's first text frame means anything: its feature flags, if it is
    ``feature_flags``."""
    first = True
    while True:
        received = await websocket.receive()
        if received["type"] == "websocket.disconnect":
            return
        text = received.get("text")
        if text is None or not first:
            continue
        first = False
        client_flags = _client_flags(text)
        if client_flags is not None:
            socket.wants_metadata = client_flags.get("supports_preview_metadata") is True
            socket.wants_places = True
            socket.send(messages.message("feature_flags", flags))


def _client_flags(text: str) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        frame = json.loads(text)
        if isinstance(frame, dict) and frame.get("type") == "feature_flags":
            data = frame.get("data")
            return data if isinstance(data, dict) else {}
    return None


def _log_end(exc: BaseException | None) -> None:
    if isinstance(exc, WebSocketDisconnect | RuntimeError | OSError):
        return  # the client went away while frames were being written: nothing to report
    logger.opt(exception=exc).error("gateway websocket failed")
