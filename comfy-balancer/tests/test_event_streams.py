"""Many watchers on one balancer (real processes, real Redis, SSE over loopback): open event
streams cost no Redis connection each, so submits and dispatch go on; the limit answers 429;
a stream survives a Redis restart and continues from its cursor."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from comfy_shared.lifecycle import Cancelled
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore
from comfy_stack.embedded_redis import start_redis_server
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.records import on_node, run, succeed
from comfy_testkit.sse_client import RawSseStream, SseFrame
from comfy_testkit.stack import AUTH_HEADERS, RunningComponent, start_balancer_process
from comfy_testkit.waiting import wait_for_condition

STREAMS = 200
SUBMITS = 20
SUBMIT_LIMIT_S = 2.0
"""Far above a normal submit (milliseconds), far below a stall behind a busy pool."""


def fresh() -> str:
    return uuid.uuid4().hex[:8]


def events_path(task_id: str) -> str:
    return f"/api/v1/tasks/{task_id}/events"


async def watched_tasks(redis: Redis, count: int) -> list[str]:
    """Tasks that exist but are in no queue: nothing changes them unless the test does."""
    store = TaskStore(redis, RedisKeys())
    ids = [f"watched-{fresh()}" for _ in range(count)]
    for task_id in ids:
        await store.create(on_node(task_id))
    return ids


async def open_stream(url: str, task_id: str) -> RawSseStream:
    stream = await RawSseStream.open(url, events_path(task_id))
    assert stream.status == 200, await stream.body()
    return stream


async def first_event(stream: RawSseStream) -> SseFrame:
    event = await asyncio.wait_for(stream.next_event(), 10)
    assert event is not None
    return event


@pytest.fixture
async def streams() -> AsyncIterator[list[RawSseStream]]:
    """Streams a test opened; closed at teardown."""
    opened: list[RawSseStream] = []
    yield opened
    await asyncio.gather(*(stream.close() for stream in opened))


async def timed_submit(api: httpx.AsyncClient) -> tuple[float, str]:
    started = time.perf_counter()
    task = await submit(api, graphs.solid_image(f"s-{fresh()}"))
    return time.perf_counter() - started, str(task["id"])


async def test_many_open_streams_leave_submits_and_dispatch_alone(
    make_cluster: Callable[..., Cluster], redis: Redis, streams: list[RawSseStream]
) -> None:
    cluster = make_cluster(["a"])
    watched = await watched_tasks(redis, STREAMS)
    opened = await asyncio.gather(
        *(open_stream(cluster.balancer.url, i) for i in watched), return_exceptions=True
    )
    streams.extend(stream for stream in opened if isinstance(stream, RawSseStream))
    assert len(streams) == STREAMS, [repr(e) for e in opened if isinstance(e, BaseException)][:3]
    firsts = await asyncio.gather(*(first_event(stream) for stream in streams))
    assert {frame.data["task"]["status"] for frame in firsts if frame.data} == {"queued"}

    submits = [await timed_submit(cluster.api) for _ in range(SUBMITS)]  # each answers 202
    finished = [await wait_until_finished(cluster.api, task_id) for _, task_id in submits]
    ready = await cluster.api.get("/readyz")

    assert max(seconds for seconds, _ in submits) < SUBMIT_LIMIT_S
    assert {task["status"] for task in finished} == {"succeeded"}
    assert ready.status_code == 200, ready.text
    # Every stream is still live: each gets its task's end, then the server ends it.
    store = TaskStore(redis, RedisKeys())
    for task_id in watched:
        await store.apply(task_id, Cancelled())
    ends = await asyncio.gather(*(first_event(stream) for stream in streams))
    assert {frame.data["task"]["status"] for frame in ends if frame.data} == {"cancelled"}
    assert [await stream.next_frame() for stream in streams] == [None] * STREAMS


async def test_past_max_streams_a_new_stream_gets_429_until_one_closes(
    start_balancer: BalancerFactory, redis: Redis, streams: list[RawSseStream]
) -> None:
    balancer = start_balancer(extra_args=["--max-streams", "3"])
    [task_id] = await watched_tasks(redis, 1)
    streams.extend([await open_stream(balancer.url, task_id) for _ in range(3)])
    for stream in streams:
        await first_event(stream)

    async with httpx.AsyncClient(base_url=balancer.url, timeout=10, headers=AUTH_HEADERS) as api:
        refused = await api.get(events_path(task_id))
        await streams.pop().close()

        async def admitted() -> bool:
            async with api.stream("GET", events_path(task_id)) as response:
                return response.status_code == 200

        await wait_for_condition(admitted, what="a stream admitted again", timeout_s=10)

    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_streams"
    assert refused.json()["type"] == "service"
    assert int(refused.headers["retry-after"]) > 0


async def readiness(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"{url}/readyz")


async def test_a_stream_resumes_after_redis_restarts_and_delivers_later_events_once(
    tmp_path: Path,
    process_log_dir: Path,
    components: list[RunningComponent],
    streams: list[RawSseStream],
) -> None:
    server = start_redis_server(tmp_path, persistent=True)  # the session's Redis is shared
    try:
        balancer = start_balancer_process(
            process_log_dir, redis_url=server.url, extra_args=["--sse-heartbeat-s", "0.5"]
        )
        components.append(balancer)
        redis = await connect_redis(server.url)
        [task_id] = await watched_tasks(redis, 1)
        stream = await open_stream(balancer.url, task_id)
        streams.append(stream)
        await first_event(stream)

        server.stop()
        await redis.aclose()

        async def hub_failing() -> bool:
            body = (await readiness(balancer.url)).json()
            return "event-streams" in body["loops"]

        await wait_for_condition(hub_failing, what="/readyz naming the hub", timeout_s=15)
        server = start_redis_server(tmp_path, port=server.port, persistent=True)
        redis = await connect_redis(server.url, attempts=20)
        store = TaskStore(redis, RedisKeys())
        await run(store, task_id)  # before the hub is back, likely

        async def ready() -> bool:
            return (await readiness(balancer.url)).status_code == 200

        await wait_for_condition(ready, what="/readyz answering 200 again", timeout_s=15)
        await succeed(store, task_id)
        later = [await first_event(stream), await first_event(stream)]
        ended = await asyncio.wait_for(stream.next_event(), 10)
        await redis.aclose()
    finally:
        server.stop()

    assert [frame.data["task"]["status"] for frame in later if frame.data] == [
        "running",
        "succeeded",
    ]
    assert later[0].id != later[1].id
    assert ended is None
