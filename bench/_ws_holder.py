"""Holds many ComfyUI WebSocket clients of the gateway, in a process of its own.

Each client connects as the ComfyUI frontend does (``/ws?clientId=...``, its key as
``?token=``, the frontend's feature flags as its first frame) and keeps the time each frame
arrives (``time.time()``), nothing else: parsing waits until the end, so a busy client does
not delay its own clock. Commands come over a pipe: "open" (answer: ``Opened``), "collect"
(answer: ``Collected``, every frame received so far, then forgotten), "exit".
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from comfy_testkit.gateway_ws import FRONTEND_FLAGS

OPEN_AT_ONCE = 50


@dataclass(frozen=True)
class Socket:
    tenant: str
    tenant_key: str
    client_id: str


@dataclass(frozen=True)
class Opened:
    sockets: int
    seconds: float
    refused: int


@dataclass(frozen=True)
class Collected:
    # client id -> arrivals of text frames: (time.time(), text)
    texts: dict[str, list[tuple[float, str]]]
    binary_frames: int
    closed_early: int
    cpu_s: float


@dataclass
class _Client:
    socket: Socket
    ws: ClientConnection
    texts: list[tuple[float, str]] = field(default_factory=list)
    binary_frames: int = 0
    closed: bool = False


def hold_sockets(pipe: Connection, base_url: str, sockets: list[Socket], compression: bool) -> None:
    """Process entry point (see the module docstring)."""
    asyncio.run(_serve(pipe, base_url, sockets, compression))


async def _serve(pipe: Connection, base_url: str, sockets: list[Socket], compression: bool) -> None:
    loop = asyncio.get_running_loop()
    clients: list[_Client] = []
    readers: list[asyncio.Task[None]] = []
    while (command := await loop.run_in_executor(None, pipe.recv)) != "exit":
        if command == "open":
            started = time.monotonic()
            clients = await _open_all(base_url, sockets, compression)
            readers = [asyncio.create_task(_read(client)) for client in clients]
            pipe.send(Opened(len(clients), time.monotonic() - started, len(sockets) - len(clients)))
        elif command == "collect":
            pipe.send(_collect(clients))
    for client in clients:
        await client.ws.close()
    await asyncio.gather(*readers, return_exceptions=True)


async def _open_all(base_url: str, sockets: list[Socket], compression: bool) -> list[_Client]:
    ws_url = base_url.replace("http://", "ws://", 1)
    opened: list[_Client] = []
    for start in range(0, len(sockets), OPEN_AT_ONCE):
        batch = sockets[start : start + OPEN_AT_ONCE]
        results = await asyncio.gather(
            *(_open(ws_url, socket, compression) for socket in batch), return_exceptions=True
        )
        opened.extend(r for r in results if isinstance(r, _Client))
    return opened


async def _open(ws_url: str, socket: Socket, compression: bool) -> _Client:
    ws = await connect(
        f"{ws_url}/ws?clientId={socket.client_id}&token={socket.tenant_key}",
        open_timeout=30,
        max_size=2**26,
        compression="deflate" if compression else None,
    )
    await ws.send(json.dumps({"type": "feature_flags", "data": FRONTEND_FLAGS}))
    return _Client(socket, ws)


async def _read(client: _Client) -> None:
    try:
        async for frame in client.ws:
            if isinstance(frame, str):
                client.texts.append((time.time(), frame))
            else:
                client.binary_frames += 1
    except ConnectionClosed:
        pass
    finally:
        client.closed = True


def _collect(clients: list[_Client]) -> Collected:
    texts: dict[str, list[tuple[float, str]]] = {}
    for client in clients:
        texts.setdefault(client.socket.client_id, []).extend(client.texts)
        client.texts = []
    times = psutil.Process().cpu_times()
    return Collected(
        texts=texts,
        binary_frames=sum(client.binary_frames for client in clients),
        closed_early=sum(client.closed for client in clients),
        cpu_s=times.user + times.system,
    )
