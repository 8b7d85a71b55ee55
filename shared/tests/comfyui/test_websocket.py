"""ComfyEventListener against a real websockets server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve

from comfy_shared.comfyui import (
    ComfyEventListener,
    Connected,
    Disconnected,
    Executing,
    FeatureFlags,
    ListenerConfig,
    ListenerEvent,
    PreviewImageWithMetadata,
    ProgressText,
    Status,
    Unknown,
    backoff_delay,
    parse_message,
    ws_url,
)
from comfy_testkit.captures import load_ws_transcripts

if TYPE_CHECKING:
    from loguru import Message  # exists only in loguru's type stubs

Script = Callable[[ServerConnection, int], Awaitable[None]]

FAST = ListenerConfig(
    min_backoff_s=0.01,
    max_backoff_s=0.05,
    silence_timeout_s=None,
    ping_interval_s=None,
    close_timeout_s=0.5,
)
TRANSCRIPT = load_ws_transcripts()["success"]
CLIENT_ID = TRANSCRIPT["client_id"]
WAIT_S = 5.0


def greeting(sid: str = CLIENT_ID) -> str:
    return json.dumps(
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}}
    )


class FakeComfy:
    """Runs ``script(ws, connection_number)`` per connection and logs opens and closes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.log: list[tuple[str, int]] = []
        self.paths: list[str] = []
        self.received: list[str | bytes] = []
        self.base_url = ""
        self._changed = asyncio.Condition()

    async def handle(self, ws: ServerConnection) -> None:
        number = len(self.paths) + 1
        self.paths.append(ws.request.path if ws.request else "")
        await self._record("open", number)
        try:
            await self.script(ws, number)
        finally:
            await ws.close()
            await self._record("closed", number)

    async def _record(self, what: str, number: int) -> None:
        async with self._changed:
            self.log.append((what, number))
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), WAIT_S)


StartServer = Callable[..., Awaitable[FakeComfy]]  # (script, port=0)


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[Server] = []

    async def start(script: Script, port: int = 0) -> FakeComfy:
        fake = FakeComfy(script)
        server = await serve(fake.handle, "127.0.0.1", port, close_timeout=0.2)
        servers.append(server)
        fake.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return fake

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def collect(
    events: AsyncIterator[ListenerEvent], done: Callable[[list[ListenerEvent]], bool]
) -> list[ListenerEvent]:
    """Events until ``done(events_so_far)``; fails after WAIT_S."""
    seen: list[ListenerEvent] = []
    async with asyncio.timeout(WAIT_S):
        async for event in events:
            seen.append(event)
            if done(seen):
                return seen
    raise AssertionError(f"event stream ended: {seen}")


def connections(seen: list[ListenerEvent]) -> int:
    return sum(isinstance(event, Connected) for event in seen)


async def silent(ws: ServerConnection, number: int) -> None:
    await ws.wait_closed()


async def greet_then_wait(ws: ServerConnection, number: int) -> None:
    await ws.send(greeting())
    await ws.wait_closed()


def text_frame(node_id: str, text: str) -> bytes:
    return struct.pack(">II", 3, len(node_id)) + node_id.encode() + text.encode()


# --- replay and reconnect ----------------------------------------------------------------------


@pytest.mark.parametrize("drop", ["close", "tcp-drop"])
async def test_replays_transcript_then_reconnects_after_drop(
    start_server: StartServer, drop: str
) -> None:
    async def replay_once(ws: ServerConnection, number: int) -> None:
        if number > 1:
            return await greet_then_wait(ws, number)
        for message in TRANSCRIPT["messages"]:
            await ws.send(json.dumps(message))
        await ws.send(text_frame("4", "width: 40, height: 30"))
        await ws.send(json.dumps({"type": "custom.node.event", "data": {"x": 1}}))
        if drop == "close":
            await ws.close()
        else:
            ws.transport.close()  # TCP gone, no close handshake

    fake = await start_server(replay_once)
    async with ComfyEventListener(fake.base_url, CLIENT_ID, FAST) as events:
        seen = await collect(events, lambda s: connections(s) == 2 and isinstance(s[-1], Status))

    recorded = [parse_message(m["type"], m["data"]) for m in TRANSCRIPT["messages"]]
    assert seen == [
        Connected(client_id=CLIENT_ID, connection_number=1),
        *recorded,
        ProgressText(node_id="4", text="width: 40, height: 30"),
        Unknown(type="custom.node.event", data={"x": 1}),
        seen[len(recorded) + 3],
        Connected(client_id=CLIENT_ID, connection_number=2),
        Status(queue_remaining=0, sid=CLIENT_ID),
    ]
    assert isinstance(seen[len(recorded) + 3], Disconnected)
    assert isinstance(recorded[-1], Executing)
    assert recorded[-1].done
    assert fake.paths == [f"/ws?clientId={CLIENT_ID}"] * 2


async def test_unparsable_frames_are_skipped(start_server: StartServer) -> None:
    async def garbage_first(ws: ServerConnection, number: int) -> None:
        await ws.send("not json")
        await ws.send(b"\x00")
        await greet_then_wait(ws, number)

    fake = await start_server(garbage_first)
    async with ComfyEventListener(fake.base_url, CLIENT_ID, FAST) as events:
        seen = await collect(events, lambda s: len(s) == 2)

    assert seen == [
        Connected(client_id=CLIENT_ID, connection_number=1),
        Status(queue_remaining=0, sid=CLIENT_ID),
    ]


async def test_connects_once_the_server_comes_up(start_server: StartServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failed_twice = asyncio.Event()
    failures: list[str] = []

    def count_failures(message: Message) -> None:
        if str(message.record["extra"].get("why", "")).startswith("connect failed"):
            failures.append(message)
            if len(failures) >= 2:
                failed_twice.set()

    sink = logger.add(count_failures, level="DEBUG")
    try:
        async with ComfyEventListener(f"http://127.0.0.1:{port}", CLIENT_ID, FAST) as events:
            first = asyncio.ensure_future(anext(events))
            await asyncio.wait_for(failed_twice.wait(), WAIT_S)
            fake = await start_server(greet_then_wait, port)
            event = await asyncio.wait_for(first, WAIT_S)
    finally:
        logger.remove(sink)

    assert event == Connected(client_id=CLIENT_ID, connection_number=1)
    assert fake.log[0] == ("open", 1)


# --- liveness ----------------------------------------------------------------------------------


async def test_silence_timeout_reconnects_and_closes_the_old_socket_first(
    start_server: StartServer,
) -> None:
    fake = await start_server(greet_then_wait)
    config = ListenerConfig(
        min_backoff_s=0.01, max_backoff_s=0.05, silence_timeout_s=0.2, ping_interval_s=None
    )

    async with ComfyEventListener(fake.base_url, CLIENT_ID, config) as events:
        seen = await collect(events, lambda s: connections(s) == 2)

    assert [type(e) for e in seen] == [Connected, Status, Disconnected, Connected]
    disconnected = seen[2]
    assert isinstance(disconnected, Disconnected)
    assert "no frame or pong" in disconnected.reason
    # The §3.1 quirk: the old socket must be gone before the same clientId connects again.
    assert fake.log[:3] == [("open", 1), ("closed", 1), ("open", 2)]


async def test_pongs_keep_an_idle_connection_alive(start_server: StartServer) -> None:
    fake = await start_server(silent)
    config = ListenerConfig(
        min_backoff_s=0.01, max_backoff_s=0.05, silence_timeout_s=0.3, ping_interval_s=0.05
    )

    async with ComfyEventListener(fake.base_url, CLIENT_ID, config) as events:
        assert isinstance(await anext(events), Connected)
        # A negative check needs time to pass: no event (no Disconnected) for 4x the timeout.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), 1.2)

    assert fake.log[0] == ("open", 1)
    assert len(fake.paths) == 1


async def test_hung_server_that_stops_answering_pings_is_dropped(
    start_server: StartServer,
) -> None:
    async def hang_first(ws: ServerConnection, number: int) -> None:
        await ws.send(greeting())
        if number == 1:
            ws.transport.pause_reading()  # like a stuck process: pings go unanswered
        await ws.wait_closed()

    fake = await start_server(hang_first)
    config = ListenerConfig(
        min_backoff_s=0.01,
        max_backoff_s=0.05,
        silence_timeout_s=0.3,
        ping_interval_s=0.05,
        close_timeout_s=0.2,
    )

    async with ComfyEventListener(fake.base_url, CLIENT_ID, config) as events:
        seen = await collect(events, lambda s: connections(s) == 2)

    assert [type(e) for e in seen] == [Connected, Status, Disconnected, Connected]
    assert len(fake.paths) == 2


# --- handshake extras --------------------------------------------------------------------------


async def test_announces_preview_metadata_support(start_server: StartServer) -> None:
    metadata = json.dumps({"node_id": "3", "prompt_id": "p", "image_type": "image/jpeg"}).encode()
    flags = {"supports_preview_metadata": True, "max_upload_size": 104857600}

    async def flag_exchange(ws: ServerConnection, number: int) -> None:
        await ws.send(greeting())
        fake.received.append(await ws.recv())
        await ws.send(json.dumps({"type": "feature_flags", "data": flags}))
        await ws.send(struct.pack(">II", 4, len(metadata)) + metadata + b"\xff\xd8jpeg")
        await ws.wait_closed()

    fake = await start_server(flag_exchange)
    config = ListenerConfig(
        min_backoff_s=0.01,
        max_backoff_s=0.05,
        silence_timeout_s=None,
        ping_interval_s=None,
        supports_preview_metadata=True,
    )
    async with ComfyEventListener(fake.base_url, CLIENT_ID, config) as events:
        seen = await collect(events, lambda s: len(s) == 4)

    assert json.loads(fake.received[0]) == {
        "type": "feature_flags",
        "data": {"supports_preview_metadata": True},
    }
    assert seen[2] == FeatureFlags(flags=flags)
    preview = seen[3]
    assert isinstance(preview, PreviewImageWithMetadata)
    assert (preview.prompt_id, preview.node_id, preview.image) == ("p", "3", b"\xff\xd8jpeg")


async def test_the_frame_hook_sees_each_frame_as_sent_before_its_event_and_cannot_break_it(
    start_server: StartServer,
) -> None:
    frames: list[str | bytes] = [
        json.dumps({"type": "execution_start", "data": {"prompt_id": "p", "timestamp": 1}}),
        text_frame("4", "width: 40"),
        "not json",  # unparsable: no event, and the hook does not see it either
        json.dumps({"type": "custom.node.event", "data": {"x": 1}}),
    ]

    async def send_all(ws: ServerConnection, number: int) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    fake = await start_server(send_all)
    shown: list[tuple[str | bytes, str]] = []
    handed_on_after: list[int] = []

    def hook(frame: str | bytes, event: object) -> None:
        shown.append((frame, type(event).__name__))
        if isinstance(event, ProgressText):
            raise RuntimeError("hook bug")

    listener = ComfyEventListener(fake.base_url, CLIENT_ID, FAST, on_frame=hook)
    async with listener as events:
        async for event in events:
            handed_on_after.append(len(shown))
            if isinstance(event, Unknown):
                break

    assert shown == [
        (frames[0], "ExecutionStart"),
        (frames[1], "ProgressText"),
        (frames[3], "Unknown"),
    ]
    assert handed_on_after == [0, 1, 2, 3]  # Connected, then each event after its frame


# --- stopping ----------------------------------------------------------------------------------


def _keepalive_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("comfyui-ws-keepalive")]


async def test_cancellation_stops_promptly_and_leaves_nothing_behind(
    start_server: StartServer,
) -> None:
    fake = await start_server(greet_then_wait)
    config = ListenerConfig(min_backoff_s=0.01, max_backoff_s=0.05, ping_interval_s=0.05)
    listener = ComfyEventListener(fake.base_url, CLIENT_ID, config)
    connected = asyncio.Event()

    async def consume() -> None:
        async with listener as events:
            async for event in events:
                if isinstance(event, Status):
                    connected.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(connected.wait(), WAIT_S)
    assert _keepalive_tasks()

    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1.0)

    assert task in done
    assert task.cancelled()
    await fake.wait_until(lambda: ("closed", 1) in fake.log)
    assert _keepalive_tasks() == []


async def test_run_passes_every_event_and_survives_a_failing_handler(
    start_server: StartServer,
) -> None:
    async def three_statuses(ws: ServerConnection, number: int) -> None:
        for _ in range(3):
            await ws.send(greeting())
        await ws.wait_closed()

    fake = await start_server(three_statuses)
    handled: list[ListenerEvent] = []
    all_seen = asyncio.Event()

    async def handler(event: ListenerEvent) -> None:
        handled.append(event)
        if len(handled) == 4:
            all_seen.set()
        if len(handled) == 2:
            raise RuntimeError("handler bug")

    task = asyncio.create_task(ComfyEventListener(fake.base_url, CLIENT_ID, FAST).run(handler))
    try:
        await asyncio.wait_for(all_seen.wait(), WAIT_S)
    finally:
        task.cancel()
        await asyncio.wait([task])

    assert [type(e).__name__ for e in handled] == ["Connected", "Status", "Status", "Status"]
    assert task.cancelled()


async def test_listener_cannot_be_entered_twice(start_server: StartServer) -> None:
    fake = await start_server(greet_then_wait)
    listener = ComfyEventListener(fake.base_url, CLIENT_ID, FAST)

    async with listener:
        with pytest.raises(RuntimeError):
            await listener.__aenter__()


# --- pure helpers ------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)

    for attempt in range(1, 60):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(50)]
        assert all(0.5 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1

    assert backoff_delay(10_000, 0.5, 30.0, rng) <= 30.0


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8188", "ws://127.0.0.1:8188/ws?clientId=abc+d%2F1"),
        ("https://comfy.example/", "wss://comfy.example/ws?clientId=abc+d%2F1"),
        ("http://proxy/comfy/", "ws://proxy/comfy/ws?clientId=abc+d%2F1"),
    ],
)
def test_ws_url(base: str, expected: str) -> None:
    assert ws_url(base, "abc d/1") == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_backoff_s": 0},
        {"min_backoff_s": 5, "max_backoff_s": 1},
        {"silence_timeout_s": 5, "ping_interval_s": 5},
    ],
)
def test_config_rejects_inconsistent_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="_s"):
        ListenerConfig(**kwargs)


def test_empty_client_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="client_id"):
        ComfyEventListener("http://127.0.0.1:8188", "")
