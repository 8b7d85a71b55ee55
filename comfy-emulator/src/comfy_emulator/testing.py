"""Small async helpers for tests that drive an emulator over real HTTP and WebSocket.

    async with await start_emulator(EmulatorConfig(port=0, step_time=0.001)) as running:
        async with EmulatorClient(running.url) as client:
            async with client.websocket("client-1") as ws:
                prompt_id = (await client.post_prompt(workflow, client_id="client-1"))["prompt_id"]
                await ws.wait_done(prompt_id)
            history = await client.history(prompt_id)

Every wait takes a timeout and polls or listens for a condition; none sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

JsonDict = dict[str, Any]
DEFAULT_TIMEOUT_S = 10.0


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.01
) -> None:
    """Poll `check` until it returns True; TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(poll_s)


class EmulatorClient:
    """HTTP helpers around one aiohttp session."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession()

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    async def get_json(self, path: str) -> Any:
        async with self.session.get(self.base_url + path) as response:
            response.raise_for_status()
            return await response.json()

    async def post_json(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POST a JSON body; returns (status, parsed JSON or the raw text)."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        async with self.session.post(self.base_url + path, data=data, headers=headers) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text) if text else None
            except json.JSONDecodeError:
                return response.status, text

    async def post_prompt(self, prompt: JsonDict, **fields: Any) -> JsonDict:
        """POST /prompt and return the 200 body; AssertionError on any other status."""
        status, body = await self.post_json("/prompt", {"prompt": prompt, **fields})
        if status != 200:
            raise AssertionError(f"POST /prompt returned {status}: {body}")
        result: JsonDict = body
        return result

    async def history(self, prompt_id: str) -> JsonDict:
        body: JsonDict = await self.get_json(f"/history/{prompt_id}")
        return body

    async def wait_for_history(
        self, prompt_id: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> JsonDict:
        """The history entry of `prompt_id`, once it exists."""
        found: JsonDict = {}

        async def present() -> bool:
            found.update(await self.history(prompt_id))
            return prompt_id in found

        await wait_until(present, timeout_s)
        entry: JsonDict = found[prompt_id]
        return entry

    async def wait_idle(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        async def idle() -> bool:
            info = await self.get_json("/prompt")
            return bool(info["exec_info"]["queue_remaining"] == 0)

        await wait_until(idle, timeout_s)

    async def wait_running(self, prompt_id: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        async def running() -> bool:
            queue = await self.get_json("/queue")
            return any(item[1] == prompt_id for item in queue["queue_running"])

        await wait_until(running, timeout_s)

    def websocket(self, client_id: str | None = None, path: str = "/ws") -> WsRecorder:
        query = f"?clientId={client_id}" if client_id else ""
        return WsRecorder(self.session, self.base_url + path + query)


class WsRecorder:
    """Records every frame of one WebSocket in the background."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url
        self.messages: list[JsonDict] = []
        self.binary: list[bytes] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WsRecorder:
        self._ws = await self._session.ws_connect(self._url)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse:
        assert self._ws is not None, "use `async with`"
        return self._ws

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def send_json(self, data: Any) -> None:
        await self.ws.send_json(data)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(json.loads(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    self.binary.append(bytes(message.data))
                await self._notify()
        finally:
            self.closed.set()
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[JsonDict], bool], timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> JsonDict:
        """The first recorded message matching `predicate` (waiting for it if needed)."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                if self.closed.is_set():
                    raise ConnectionError("the socket closed before the message arrived")
                await self._changed.wait()

    async def wait_done(
        self, prompt_id: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> list[JsonDict]:
        """Wait for `executing{node: null}` of `prompt_id`; returns that prompt's messages."""
        await self.wait_for(lambda m: is_done(m, prompt_id), timeout_s)
        return [m for m in self.messages if m.get("data", {}).get("prompt_id") == prompt_id]

    async def wait_closed(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        async with asyncio.timeout(timeout_s):
            await self.closed.wait()

    def types(self) -> list[str]:
        return [str(m["type"]) for m in self.messages]


def is_done(message: JsonDict, prompt_id: str) -> bool:
    """The official "prompt finished" signal: executing with node None for this prompt."""
    data = message.get("data", {})
    return bool(
        message.get("type") == "executing"
        and data.get("node") is None
        and data.get("prompt_id") == prompt_id
    )
