"""WebSocket listener for one ComfyUI: typed events over a connection that never gives up.

ComfyUI buffers nothing for a disconnected client id, so every (re)connection is announced
with a :class:`Connected` event: on it, reconcile from ``/queue`` and ``/history``.

Liveness: ComfyUI sends nothing while idle, so the listener pings every ``ping_interval_s``
and counts pongs as well as frames; if neither arrives for ``silence_timeout_s`` the server
is taken for dead (hung host, half-open TCP) and the listener reconnects.

ComfyUI quirk handled here: a new socket with the same clientId takes over the sid, but when
the *old* socket later closes, its cleanup deletes the sid and the new socket goes deaf.
So the old socket is always fully closed before the next connection is opened.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlencode, urlsplit, urlunsplit

from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State
from websockets.uri import parse_uri

from comfy_shared.comfyui.errors import ComfyProtocolError
from comfy_shared.comfyui.events import (
    Connected,
    Disconnected,
    Event,
    ListenerEvent,
    parse_frame,
)

# What a failed connection attempt can raise: refused/unreachable (OSError), open_timeout
# (TimeoutError), or a failed handshake such as a 404 or a proxy error (WebSocketException).
_CONNECT_ERRORS = (OSError, TimeoutError, WebSocketException)

EventHandler = Callable[[ListenerEvent], Awaitable[None]]
FrameHook = Callable[[str | bytes, Event], None]
"""Sees every frame as received (text or bytes) with its parsed event, before the event is
handed on; it must not block (the receive loop waits for it)."""


@dataclass(frozen=True)
class ListenerConfig:
    """Reconnect and liveness settings; ``None`` disables pings or the silence check."""

    min_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    silence_timeout_s: float | None = 30.0
    ping_interval_s: float | None = 10.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    max_message_bytes: int = 16 * 2**20
    # Announce support for PREVIEW_IMAGE_WITH_METADATA frames (previews tagged with prompt id).
    supports_preview_metadata: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.min_backoff_s <= self.max_backoff_s:
            raise ValueError("need 0 < min_backoff_s <= max_backoff_s")
        if (
            self.silence_timeout_s is not None
            and self.ping_interval_s is not None
            and self.ping_interval_s >= self.silence_timeout_s
        ):
            # Otherwise an idle but healthy server would be declared dead between two pings.
            raise ValueError("ping_interval_s must be shorter than silence_timeout_s")


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): uniform in [min_s, ceiling], the
    ceiling doubling per attempt up to max_s. The jitter spreads the reconnects of many
    clients after a ComfyUI restart."""
    ceiling = min(max_s, min_s * 2.0 ** min(attempt, 32))
    return rng.uniform(min_s, ceiling)


def ws_url(base_url: str, client_id: str) -> str:
    """``http://host:8188`` → ``ws://host:8188/ws?clientId=<client_id>``."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urlencode({"clientId": client_id})
    return urlunsplit((scheme, parts.netloc, f"{parts.path}/ws", query, ""))


class _Silence(Exception):
    """Nothing (not even a pong) arrived for silence_timeout_s."""


class _Liveness:
    """Loop time of the last frame or pong."""

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()


class ComfyEventListener:
    """Connects to ``{base_url}/ws?clientId={client_id}`` and yields typed events forever.

    Either iterate::

        async with ComfyEventListener(url, client_id) as events:
            async for event in events: ...

    or hand every event to a coroutine with :meth:`run`. Cancelling the consuming task stops
    the listener and closes the socket; nothing is left running.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        config: ListenerConfig | None = None,
        *,
        rng: random.Random | None = None,
        on_frame: FrameHook | None = None,
    ) -> None:
        """``on_frame``: see :data:`FrameHook` (e.g. to keep the frames themselves)."""
        if not client_id:
            # Without it ComfyUI invents a sid, and per-prompt events would go nowhere.
            raise ValueError("client_id must not be empty")
        self.client_id = client_id
        self.url = ws_url(base_url, client_id)
        parse_uri(self.url)  # fail now on a malformed URL, not on every reconnect
        self._config = config or ListenerConfig()
        self._rng = rng or random.Random()
        self._log = logger.bind(comfy_ws=self.url)
        self._active: AsyncGenerator[ListenerEvent, None] | None = None
        self._on_frame = on_frame

    async def __aenter__(self) -> AsyncGenerator[ListenerEvent, None]:
        if self._active is not None:
            raise RuntimeError("listener is already running")
        self._active = self.events()
        return self._active

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        active, self._active = self._active, None
        if active is not None:
            await active.aclose()

    async def run(
        self,
        handler: EventHandler,
        *,
        on_handled: Callable[[], object] = lambda: None,
        on_failed: Callable[[Exception], object] | None = None,
    ) -> None:
        """Call ``handler`` for every event until cancelled. A handler error does not cost the
        connection: it goes to ``on_failed`` (logged, if none is given) and the next event is
        handled; ``on_handled`` hears of every event handled without one."""
        async with aclosing(self.events()) as events:
            async for event in events:
                try:
                    await handler(event)
                except Exception as exc:
                    if on_failed is None:
                        self._log.opt(exception=exc).error("comfyui event handler failed")
                    else:
                        on_failed(exc)
                else:
                    on_handled()

    async def events(self) -> AsyncGenerator[ListenerEvent, None]:
        """The event stream. Close it (``contextlib.aclosing``) if you stop early."""
        attempt = 0
        number = 0
        warned = False
        loop = asyncio.get_running_loop()
        while True:
            try:
                ws = await self._open()
            except _CONNECT_ERRORS as exc:
                attempt += 1
                # One warning per outage; the retries that follow are only debug noise.
                level = "DEBUG" if warned else "WARNING"
                warned = True
                await self._pause(attempt, f"connect failed: {exc!r}", level)
                continue
            number += 1
            warned = False
            started = loop.time()
            async with aclosing(self._session(ws, number)) as session:
                async for event in session:
                    yield event
            # A server that accepts and then drops at once must still back off; a connection
            # that outlived the longest backoff counts as healthy and resets the count.
            if loop.time() - started > self._config.max_backoff_s:
                attempt = 0
            attempt += 1
            await self._pause(attempt, "reconnecting", "DEBUG")

    async def _open(self) -> ClientConnection:
        config = self._config
        return await connect(
            self.url,
            open_timeout=config.open_timeout_s,
            close_timeout=config.close_timeout_s,
            # The library's keepalive is off: ours also feeds the silence check.
            ping_interval=None,
            ping_timeout=None,
            max_size=config.max_message_bytes,
        )

    async def _session(
        self, ws: ClientConnection, number: int
    ) -> AsyncGenerator[ListenerEvent, None]:
        """One connection: Connected, its events, then Disconnected once it is closed."""
        self._log.info("comfyui websocket connected", connection_number=number)
        liveness = _Liveness()
        keepalive = self._start_keepalive(ws, liveness)
        try:
            yield Connected(client_id=self.client_id, connection_number=number)
            await self._say_hello(ws)
            while True:
                frame = await self._receive(ws, liveness)
                event = self._parse(frame)
                if event is not None:
                    self._show(frame, event)
                    yield event
        except ConnectionClosed as exc:
            reason = f"connection closed: {exc}"
        except _Silence as exc:
            reason = str(exc)
        finally:
            try:
                await _stop(keepalive)
            finally:
                await _close(ws)  # even if cancelled while stopping the keepalive
        self._log.info("comfyui websocket disconnected", reason=reason)
        yield Disconnected(reason=reason)

    async def _say_hello(self, ws: ClientConnection) -> None:
        if self._config.supports_preview_metadata:
            flags = {"supports_preview_metadata": True}
            await ws.send(json.dumps({"type": "feature_flags", "data": flags}))

    async def _receive(self, ws: ClientConnection, liveness: _Liveness) -> str | bytes:
        timeout = self._config.silence_timeout_s
        if timeout is None:
            return await ws.recv()
        while True:
            try:
                async with asyncio.timeout_at(liveness.last + timeout):
                    frame = await ws.recv()
            except TimeoutError:
                if asyncio.get_running_loop().time() >= liveness.last + timeout:
                    raise _Silence(f"no frame or pong for {timeout}s") from None
                continue  # a pong came in meanwhile: alive, keep waiting
            liveness.touch()
            return frame

    def _parse(self, frame: str | bytes) -> Event | None:
        try:
            return parse_frame(frame)
        except ComfyProtocolError as exc:
            self._log.warning("unparsable comfyui frame skipped", error=str(exc))
            return None

    def _show(self, frame: str | bytes, event: Event) -> None:
        if self._on_frame is None:
            return
        try:
            self._on_frame(frame, event)
        except Exception:
            # The hook's trouble must not cost the connection (nor the events).
            self._log.opt(exception=True).error("comfyui frame hook failed")

    def _start_keepalive(
        self, ws: ClientConnection, liveness: _Liveness
    ) -> asyncio.Task[None] | None:
        interval = self._config.ping_interval_s
        if interval is None:
            return None
        name = f"comfyui-ws-keepalive:{self.client_id}"
        return asyncio.create_task(_keep_alive(ws, interval, liveness), name=name)

    async def _pause(self, attempt: int, why: str, level: str) -> None:
        config = self._config
        delay = backoff_delay(attempt, config.min_backoff_s, config.max_backoff_s, self._rng)
        self._log.log(
            level, "comfyui websocket waiting", why=why, attempt=attempt, delay_s=round(delay, 3)
        )
        await asyncio.sleep(delay)


async def _keep_alive(ws: ClientConnection, interval_s: float, liveness: _Liveness) -> None:
    try:
        while True:
            await asyncio.sleep(interval_s)
            pong = await ws.ping()
            await pong
            liveness.touch()
    except ConnectionClosed:
        return  # the receive loop sees the closure as well and handles it


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    # asyncio.wait (unlike awaiting the task) lets our own cancellation through.
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).warning("comfyui websocket keepalive failed")


async def _close(ws: ClientConnection) -> None:
    """Close handshake and TCP close (close() waits for both, up to close_timeout)."""
    try:
        await ws.close()
    finally:
        if ws.state is not State.CLOSED:
            # close() itself was cancelled: drop the TCP connection rather than leak it.
            ws.transport.abort()
