"""The relay's rules where timing decides, driven step by step: real Redis, the real task store,
stream hub and relay of one process, sockets without a network (their frames collected as
their writer sends them). The records change as nodes and the balancer change them
(``TaskStore.apply``); the frames are what a node's service appends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from comfy_balancer.gateway.relay import GatewayRelay
from comfy_balancer.gateway.ws_socket import ClientSocket
from comfy_shared.frames import MessageFrame, to_fields
from comfy_shared.lifecycle import AttemptRef, Ended, Placed, Started, TakenBack
from comfy_shared.loops import LoopHandle
from comfy_shared.models import ErrorType, PromptOrigin, RetryPolicy, TaskError, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_hub import Follower, StreamHub
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys("relay-test")
TENANT = "acme"
GRACE_S = 1.0


class Collected:
    """Stands in for the WebSocket a ClientSocket writes to."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(text)

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(data)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(f) for f in self.frames if isinstance(f, str)]

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages()]


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS)


@pytest.fixture
def queue(redis: Redis, store: TaskStore) -> TaskQueue:
    return TaskQueue(redis, KEYS, store)


class FramesLagHub(StreamHub):
    """A hub whose followers of frames never deliver, as if its reads lagged far behind."""

    def follow(self, key: str, after: str) -> Follower:
        lagging = key.endswith(":frames")
        return super().follow(f"{key}:not-yet" if lagging else key, after)


@pytest.fixture
async def relay(
    request: pytest.FixtureRequest,
    redis_url: str,
    redis: Redis,
    store: TaskStore,
    queue: TaskQueue,
) -> AsyncIterator[GatewayRelay]:
    hub_class: type[StreamHub] = getattr(request, "param", StreamHub)
    hub = hub_class(redis_url, redis, max_streams=100, block_s=0.5)
    relay = GatewayRelay(
        store=store,
        queue=queue,
        redis=redis,
        keys=KEYS,
        hub=hub,
        rewrite_output=lambda task_id, output: {"public": output},
        rescan_s=0.2,
        frame_grace_s=GRACE_S,
    )
    loops = [
        asyncio.create_task(hub.run(LoopHandle("event-streams"))),
        asyncio.create_task(relay.run(LoopHandle("gateway-relay"))),
    ]
    yield relay
    await relay.stop()
    for loop in loops:
        loop.cancel()
    await asyncio.wait(loops)


@pytest.fixture
async def tab(relay: GatewayRelay) -> AsyncIterator[Collected]:
    socket = ClientSocket(TENANT, "tab")
    collected = Collected()
    await relay.attach(socket)
    writer = asyncio.create_task(socket.write_to(cast(Any, collected)))
    yield collected
    relay.detach(socket)
    writer.cancel()
    await asyncio.wait([writer])


async def new_prompt(
    queue: TaskQueue, task_id: str, *, tenant: str = TENANT, client_id: str = "tab"
) -> None:
    """Stored and queued as the gateway does it (the queue announces it)."""
    record = TaskRecord(id=task_id, tenant=tenant, retry=RetryPolicy(max_attempts=3))
    origin = PromptOrigin(client_id=client_id, number=1)
    await queue.submit(record, {"3": {"class_type": "KSampler"}}, origin=origin)


async def placed(store: TaskStore, task_id: str, node: str) -> AttemptRef:
    record = await store.apply(task_id, Placed(node))
    attempt = AttemptRef(node, record.attempts)
    await store.apply(task_id, Started(attempt))
    return attempt


async def node_says(
    store: TaskStore, task_id: str, attempt: int, *messages: dict[str, Any]
) -> None:
    frames = [to_fields(MessageFrame(attempt, 0.0, json.dumps(m))) for m in messages]
    await store.append_frames({task_id: frames})


def msg(kind: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "data": {**data, "prompt_id": "p1"}}


async def _told_empty_again(collected: Collected) -> bool:
    """The greeting said 0; the sibling's notices (1, then 0, or just 0 if the second took the
    place of the first before it was sent) came after it."""
    statuses = [m for m in collected.messages() if m["type"] == "status"]
    return (
        len(statuses) >= 2 and statuses[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    )


async def until(collected: Collected, count: int, what: str) -> None:
    async def enough() -> bool:
        return len(collected.messages()) >= count

    await wait_for_condition(enough, timeout_s=5, what=what)


async def test_a_node_s_end_waits_for_the_record_and_the_last_frames_for_their_grace(
    store: TaskStore, queue: TaskQueue, tab: Collected
) -> None:
    await new_prompt(queue, "p1")
    attempt = await placed(store, "p1", "n1")
    await node_says(
        store,
        "p1",
        1,
        msg("execution_start", timestamp=1),
        msg("executing", node="3", display_node="3"),
    )
    await until(tab, 5, "the start")  # greeting, enqueue status, start status, two frames
    await node_says(store, "p1", 1, msg("execution_success", timestamp=2))

    await store.apply("p1", Ended(attempt))  # the record ends before the node's last frames
    await asyncio.sleep(GRACE_S / 4)
    assert "execution_success" not in tab.types()  # the relay waits for them
    output = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}
    await node_says(
        store,
        "p1",
        1,
        msg("executed", node="9", display_node="9", output=output),
        msg("executing", node=None),
    )
    await until(tab, 9, "the end")

    assert tab.types()[3:] == [
        "execution_start",
        "executing",
        "executed",
        "execution_success",
        "status",
        "executing",
    ]
    assert tab.messages()[5]["data"]["output"] == {"public": output}
    assert tab.messages()[6]["data"] == {"prompt_id": "p1", "timestamp": 2}  # the node's own
    assert tab.messages()[-1] == {"type": "executing", "data": {"node": None, "prompt_id": "p1"}}


@pytest.mark.parametrize("relay", [FramesLagHub], indirect=True)
async def test_frames_in_redis_but_not_yet_read_are_relayed_before_the_end(
    store: TaskStore, queue: TaskQueue, tab: Collected
) -> None:
    assert KEYS.task_frames("p1").endswith(":frames")
    await new_prompt(queue, "p1")
    attempt = await placed(store, "p1", "n1")
    output = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}
    await node_says(
        store,
        "p1",
        1,
        msg("execution_start", timestamp=1),
        msg("executed", node="9", display_node="9", output=output),
        msg("execution_success", timestamp=2),
        msg("executing", node=None),
    )

    await store.apply("p1", Ended(attempt))
    await until(tab, 7, "the end")

    assert tab.types()[-4:] == ["executed", "execution_success", "status", "executing"]
    assert tab.messages()[-4]["data"]["output"] == {"public": output}


async def test_a_node_s_success_is_not_believed_when_the_task_failed_after_all(
    store: TaskStore, queue: TaskQueue, tab: Collected
) -> None:
    await new_prompt(queue, "p1")
    attempt = await placed(store, "p1", "n1")
    await node_says(
        store,
        "p1",
        1,
        msg("execution_start", timestamp=1),
        msg("execution_success", timestamp=2),
        msg("executing", node=None),
    )
    await until(tab, 4, "the start")
    lost = TaskError(type=ErrorType.SERVICE, message="the outputs could not be stored: disk full")

    await store.apply("p1", Ended(attempt, error=lost))
    await until(tab, 7, "the end")

    end = tab.messages()[-3]
    assert end["type"] == "execution_error"
    assert end["data"]["exception_type"] == "comfy_stack.ServiceError"
    assert end["data"]["exception_message"] == lost.message
    assert tab.types()[-2:] == ["status", "executing"]


async def test_frames_of_an_attempt_the_task_left_are_not_relayed(
    store: TaskStore, queue: TaskQueue, tab: Collected
) -> None:
    await new_prompt(queue, "p1")
    first = await placed(store, "p1", "n1")
    await node_says(store, "p1", 1, msg("execution_start", timestamp=1))
    await until(tab, 4, "the first start")

    await store.apply("p1", TakenBack(first, "node n1 lost"))  # back in the queue
    await node_says(store, "p1", 1, msg("executing", node="3", display_node="3"))  # n1, late
    second = await placed(store, "p1", "n2")
    await node_says(
        store,
        "p1",
        2,
        msg("execution_start", timestamp=5),
        msg("execution_success", timestamp=6),
        msg("executing", node=None),
    )
    await store.apply("p1", Ended(second))
    await until(tab, 9, "the end")

    assert tab.types()[2:] == [
        "status", "execution_start", "status", "execution_start", "execution_success", "status",
        "executing",
    ]  # fmt: skip
    assert tab.messages()[-3]["data"]["timestamp"] == 6


async def test_a_client_gets_nothing_of_a_prompt_of_another_client_or_user(
    store: TaskStore, queue: TaskQueue, relay: GatewayRelay, tab: Collected
) -> None:
    other = ClientSocket("other-tenant", "tab")
    collected = Collected()
    await relay.attach(other)
    writer = asyncio.create_task(other.write_to(cast(Any, collected)))
    try:
        await new_prompt(queue, "theirs", tenant="other-tenant")
        await new_prompt(queue, "sibling", client_id="tab-2")
        for task_id in ("theirs", "sibling"):
            attempt = await placed(store, task_id, "n1")
            await node_says(
                store, task_id, 1, {"type": "execution_start", "data": {"prompt_id": task_id}}
            )
            await store.apply(task_id, Ended(attempt))
        await until(collected, 7, "their prompt")  # greeting, enqueued, started, its end
        await wait_for_condition(lambda: _told_empty_again(tab), timeout_s=5, what="our queue")
    finally:
        relay.detach(other)
        writer.cancel()

    assert set(tab.types()) == {"status"}  # neither the other user's nor the sibling's frames
    remaining = [m["data"]["status"]["exec_info"]["queue_remaining"] for m in tab.messages()]
    assert max(remaining) <= 1  # the user's own queue only: the sibling came and went
    assert collected.types() == [
        "status", "status", "status", "execution_start", "execution_success", "status", "executing",
    ]  # fmt: skip
    assert all(
        m["data"]["prompt_id"] == "theirs"
        for m in collected.messages()[3:]
        if m["type"] != "status"
    )
