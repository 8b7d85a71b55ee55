"""Sending placements, in-process: the real task store and queue in Redis, a node faked at the
HTTP transport. Each answer a node can give ends in one state, and a slot is never held
without a live attempt."""

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from comfy_balancer.registry import NodeRegistry, NodeView
from comfy_balancer.sending import Invalid, NodeFailed, Overloaded, Sender, Taken, outcome_of
from comfy_balancer.service_client import NodeAnswer, ServiceClient
from comfy_shared.clock import utc_now
from comfy_shared.lifecycle import Placed
from comfy_shared.models import ComfyStatus, ErrorType, NodeHealth, RetryPolicy, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys("send")
GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
Handler = Callable[[httpx.Request], httpx.Response]


def test_what_each_answer_means() -> None:
    assert outcome_of(NodeAnswer(202, {})) == Taken()
    assert outcome_of(NodeAnswer(200, {})) == Taken()
    assert outcome_of(NodeAnswer(503, {"code": "overloaded"})) == Overloaded()
    assert outcome_of(NodeAnswer(503, {"code": "node_not_ready"})) == Overloaded()
    rejected = outcome_of(NodeAnswer(422, {"detail": "bad", "node_errors": {"1": {}}}))
    assert isinstance(rejected, Invalid)
    assert (rejected.error.type, rejected.error.details) == (
        ErrorType.VALIDATION, {"node_errors": {"1": {}}},
    )  # fmt: skip
    assert outcome_of(NodeAnswer(503, {"code": "redis_unavailable", "detail": "x"})) == NodeFailed(
        "node answered 503: x"
    )


class Bench:
    def __init__(self, redis: Redis, handler: Handler) -> None:
        self.redis = redis
        self.store = TaskStore(redis, KEYS)
        self.queue = TaskQueue(redis, KEYS, self.store)
        self.registry = NodeRegistry(redis, KEYS, slots=2)
        self.calls = 0

        def counting(request: httpx.Request) -> httpx.Response:
            self.calls += 1
            return handler(request)

        self.http = httpx.AsyncClient(transport=httpx.MockTransport(counting))
        self.sender = Sender(
            store=self.store, queue=self.queue, registry=self.registry,
            nodes_client=ServiceClient(self.http),
        )  # fmt: skip

    async def place(self, graph: dict[str, Any]) -> TaskRecord:
        """A task queued, claimed for node "a" and sent; returns it once the send is over."""
        record = TaskRecord(id="t", retry=RetryPolicy(max_attempts=3))
        await self.queue.submit(record, graph)
        assert await self.queue.claim("t", "a", slots=2) == 1
        placed = await self.store.apply("t", Placed("a"))
        self.sender.start(placed, graph, NODE_A)

        async def sent() -> bool:
            return not self.sender.is_sending("t")

        await wait_for_condition(sent, what="the send to end")
        return await self.store.get("t")

    async def slot_held(self) -> bool:
        return "t" in await self.queue.dispatched("a")


NODE_A = NodeView(
    "a",
    NodeHealth(
        node_id="a", url="http://node-a", version="t", started_at=utc_now(),
        comfyui=ComfyStatus(reachable=True), cpu_percent=0, ram_used_bytes=0, ram_total_bytes=1,
    ),
    last_seen_ms=0, in_flight=1, slots=2,
)  # fmt: skip


@pytest.fixture
async def bench_for(redis: Redis) -> AsyncIterator[Callable[[Handler], Bench]]:
    made: list[Bench] = []

    def make(handler: Handler) -> Bench:
        made.append(Bench(redis, handler))
        return made[-1]

    yield make
    for bench in made:
        await bench.http.aclose()


def answer(status: int, body: dict[str, Any]) -> Handler:
    return lambda request: httpx.Response(status, json=body)


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def broken(request: httpx.Request) -> httpx.Response:
    raise RuntimeError("a bug while sending")


async def test_a_node_that_takes_the_task_keeps_its_slot(
    bench_for: Callable[[Handler], Bench],
) -> None:
    bench = bench_for(answer(202, {"id": "t"}))
    record = await bench.place(GRAPH)

    assert (record.status, record.attempts) == (TaskStatus.DISPATCHED, 1)
    assert await bench.slot_held()


async def test_an_overloaded_node_gives_the_task_back_without_spending_an_attempt(
    bench_for: Callable[[Handler], Bench],
) -> None:
    bench = bench_for(answer(503, {"code": "overloaded", "detail": "busy"}))
    record = await bench.place(GRAPH)

    assert (record.status, record.attempts, record.attempt_log) == (TaskStatus.QUEUED, 0, [])
    assert not await bench.slot_held()
    assert await bench.queue.head(5) == ["t"]
    assert bench.sender.is_paused("a")


async def test_a_graph_the_node_rejects_fails_the_task_as_the_caller_s(
    bench_for: Callable[[Handler], Bench],
) -> None:
    bench = bench_for(answer(422, {"detail": "rejected", "node_errors": {"1": {"x": 1}}}))
    record = await bench.place(GRAPH)

    assert record.status is TaskStatus.FAILED
    assert record.error is not None
    assert (record.error.type, record.error.details) == (
        ErrorType.VALIDATION, {"node_errors": {"1": {"x": 1}}},
    )  # fmt: skip
    assert not await bench.slot_held()


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (answer(500, {"detail": "boom"}), "node answered 500: boom"),
        (unreachable, "dispatch failed"),
        (broken, "sending failed: a bug while sending"),
    ],
    ids=["500", "unreachable", "a bug"],
)
async def test_any_other_failure_requeues_the_task_and_spends_an_attempt(
    bench_for: Callable[[Handler], Bench], handler: Handler, reason: str
) -> None:
    bench = bench_for(handler)
    record = await bench.place(GRAPH)

    assert (record.status, record.node_id, record.attempts) == (TaskStatus.QUEUED, None, 1)
    assert reason in (record.attempt_log[-1].outcome or "")
    assert not await bench.slot_held()
    assert await bench.queue.head(5) == ["t"]
    assert (
        (await bench.registry.read())[0].recent_failures == 1
        if await bench.registry.read()
        else True
    )


async def test_a_graph_json_cannot_carry_fails_the_task_without_calling_the_node(
    bench_for: Callable[[Handler], Bench],
) -> None:
    bench = bench_for(answer(202, {}))
    poisoned = {"1": {"class_type": "KSampler", "inputs": {"cfg": math.nan}}}

    record = await bench.place(poisoned)

    assert record.status is TaskStatus.FAILED
    assert record.error is not None
    assert record.error.type is ErrorType.VALIDATION
    assert "cannot be sent as JSON" in record.error.message
    assert not await bench.slot_held()
    assert bench.calls == 0


async def test_an_outcome_redis_cannot_record_ends_the_send_quietly_holding_its_attempt(
    bench_for: Callable[[Handler], Bench], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = bench_for(answer(500, {"detail": "boom"}))

    async def redis_away(node_id: str) -> None:
        raise RedisConnectionError("Redis is away")

    monkeypatch.setattr(bench.registry, "record_failure", redis_away)
    record = TaskRecord(id="t", retry=RetryPolicy(max_attempts=3))
    await bench.queue.submit(record, GRAPH)
    assert await bench.queue.claim("t", "a", slots=2) == 1
    bench.sender.start(await bench.store.apply("t", Placed("a")), GRAPH, NODE_A)
    send = bench.sender._running["t"]
    await asyncio.wait([send], timeout=10)

    assert send.done()
    assert send.exception() is None  # nobody awaits it: an error would vanish with the task
    after = await bench.store.get("t")
    assert (after.status, after.node_id, after.attempts) == (TaskStatus.DISPATCHED, "a", 1)
    assert await bench.slot_held()  # a sweep sends it again after the dispatch timeout
