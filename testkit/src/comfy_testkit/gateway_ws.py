"""For tests (and benchmarks) of the ComfyUI gateway's WebSocket: a client that records every
frame with its arrival time, and the creation of a gateway prompt.

:func:`submit_prompt` creates a task as the gateway's ``POST /prompt`` does: a task owned by
a tenant, whose id is its prompt id (a canonical UUID), with a ``PromptOrigin`` beside it,
stored and queued in one script (``TaskQueue.submit``) on the Redis the balancer uses; the
balancer's dispatcher then places it as any other task. (It stands in for ``POST /prompt``
until tests can call that route.)
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from comfy_shared.models import PromptOrigin, RetryPolicy, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import Share, TaskQueue
from comfy_shared.task_store import TaskStore

WAIT_S = 20.0
FRONTEND_FLAGS = {
    "supports_preview_metadata": True,
    "supports_manager_v4_ui": True,
    "supports_progress_text_metadata": True,
}
"""What the ComfyUI frontend announces in its first frame."""


async def submit_prompt(
    redis: Redis,
    graph: Mapping[str, Any],
    *,
    tenant: str,
    client_id: str | None,
    task_id: str | None = None,
    extra_data: dict[str, Any] | None = None,
    keys: RedisKeys | None = None,
) -> str:
    """Queue a gateway prompt for ``tenant`` from ``client_id``; returns its id."""
    keys = keys or RedisKeys()
    store = TaskStore(redis, keys)
    record = TaskRecord(
        id=task_id or str(uuid4()),
        tenant=tenant,
        retry=RetryPolicy(max_attempts=3),
        predicted_gpu_s=1.0,
    )
    number = await store.next_prompt_number()
    origin = PromptOrigin(client_id=client_id, number=number, extra_data=extra_data or {})
    submitted = await TaskQueue(redis, keys, store).submit(
        record, dict(graph), origin=origin, share=Share(flow=tenant)
    )
    assert submitted.created, f"task {record.id} exists already"
    return record.id


@dataclass
class Received:
    at: float
    """``time.time()`` when it arrived."""
    frame: str | bytes
    message: dict[str, Any] | None = field(init=False)
    """A text frame, parsed."""

    def __post_init__(self) -> None:
        self.message = json.loads(self.frame) if isinstance(self.frame, str) else None

    @property
    def binary_type(self) -> int | None:
        if isinstance(self.frame, str):
            return None
        return int(struct.unpack_from(">I", self.frame)[0])


@dataclass
class ComfyWsClient:
    """A client of a ComfyUI WebSocket that keeps everything it receives."""

    ws: ClientConnection
    received: list[Received] = field(default_factory=list)
    closed_prompts: set[str] = field(default_factory=set)
    """Prompts whose ``executing {node: null}`` came."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        client_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = FRONTEND_FLAGS,
        path: str = "/ws",
        query: str = "",
    ) -> ComfyWsClient:
        """Connect to ``{url}{path}?clientId=...`` (``url`` may be ``ws://user:key@host``)
        and, unless ``flags`` is None, send them as the first frame, as the frontend does."""
        params = "&".join(p for p in (f"clientId={client_id}" if client_id else "", query) if p)
        target = f"{url.replace('http://', 'ws://', 1)}{path}" + (f"?{params}" if params else "")
        ws = await connect(
            target, additional_headers=dict(headers or {}), open_timeout=10, max_size=2**26
        )
        client = cls(ws)
        client._reader = asyncio.create_task(client._read(), name="test-ws-reader")
        if flags is not None:
            await ws.send(json.dumps({"type": "feature_flags", "data": dict(flags)}))
        return client

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                received = Received(time.time(), frame)
                async with self._changed:
                    self.received.append(received)
                    if (message := received.message) is not None and message == closes(
                        message.get("data", {}).get("prompt_id")
                    ):
                        self.closed_prompts.add(message["data"]["prompt_id"])
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader])

    @property
    def sid(self) -> str:
        greeting = self.messages()[0]
        assert greeting["type"] == "status", greeting
        return str(greeting["data"]["sid"])

    def messages(self) -> list[dict[str, Any]]:
        return [message for r in self.received if (message := r.message) is not None]

    def binary(self) -> list[bytes]:
        return [r.frame for r in self.received if isinstance(r.frame, bytes)]

    def of_prompt(self, prompt_id: str) -> list[dict[str, Any]]:
        """The messages about one prompt (those naming it), in order."""
        return [m for m in self.messages() if _names(m, prompt_id)]

    async def wait_for(
        self, done: Callable[[ComfyWsClient], bool], *, timeout_s: float = WAIT_S, what: str = ""
    ) -> None:
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: done(self) or self.closed.is_set())
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or done}: {self.types()}") from None
        if not done(self):
            raise AssertionError(f"socket closed before {what or done}: {self.types()}")

    async def wait_prompt_closed(self, prompt_id: str, *, timeout_s: float = WAIT_S) -> None:
        """Until ``executing {node: null, prompt_id}`` arrived."""
        await self.wait_for(
            lambda c: prompt_id in c.closed_prompts, timeout_s=timeout_s, what=prompt_id
        )

    def types(self) -> list[str]:
        return [str(m["type"]) for m in self.messages()]


def closes(prompt_id: str | None) -> dict[str, Any]:
    return {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}


def _names(message: dict[str, Any], prompt_id: str) -> bool:
    data = message.get("data")
    return isinstance(data, dict) and data.get("prompt_id") == prompt_id
