"""The stream hub against a real Redis: one reader for every follower, each entry handed to
each follower once and in order, bounded memory, admission, and recovery after Redis restarts."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from comfy_shared.errors import TooManyStreams
from comfy_shared.loops import Supervisor
from comfy_shared.redis_client import connect_redis
from comfy_shared.stream_hub import READ_COUNT, Follower, StreamHub
from comfy_stack.embedded_redis import RedisServer, start_redis_server
from comfy_testkit.waiting import wait_for_condition

LOOP = "event-streams"
LONG_BLOCK_S = 30.0
"""Longer than any test waits: a follower that had to wait out the hub's read would time out."""


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def add(redis: Redis, key: str, count: int = 1) -> list[str]:
    return [str(await redis.xadd(key, {"n": str(n)})) for n in range(count)]


async def collect(follower: Follower, count: int, timeout_s: float = 5.0) -> list[str]:
    """Ids handed to the follower until ``count`` arrived (or ``timeout_s`` without one)."""
    ids: list[str] = []
    while len(ids) < count:
        entries = await follower.next_entries(timeout_s)
        if not entries:
            break
        ids.extend(entry_id for entry_id, _ in entries)
    return ids


async def blocked_clients(redis: Redis) -> int:
    """Connections waiting in a blocking command (the hub's read, once it is in Redis)."""
    return sum("b" in str(client.get("flags", "")) for client in await redis.client_list())


async def until_live(follower: Follower) -> None:
    """Let the follower catch up (it has nothing to read) and join the hub."""
    assert await follower.next_entries(0.01) == []
    assert follower.live


@pytest.fixture
async def running_hub(redis_url: str, redis: Redis) -> AsyncIterator[Callable[..., StreamHub]]:
    loops = Supervisor()

    def start(**options: object) -> StreamHub:
        settings: dict[str, object] = {"max_streams": 100, "block_s": LONG_BLOCK_S, **options}
        hub = StreamHub(redis_url, redis, **settings)  # type: ignore[arg-type]
        loops.start(LOOP, hub.run)
        return hub

    yield start
    await loops.stop()


async def test_a_follower_catches_up_then_gets_each_new_entry_once_in_order(
    running_hub: Callable[..., StreamHub], redis: Redis
) -> None:
    hub = running_hub()
    first, *missed = await add(redis, "s", 3)
    follower = hub.follow("s", first)

    assert await collect(follower, 2) == missed
    later = await add(redis, "s", 4)
    assert await collect(follower, 4) == later
    assert await follower.next_entries(0.05) == []
    follower.close()


async def test_a_new_follower_does_not_wait_for_the_pending_read(
    running_hub: Callable[..., StreamHub], redis: Redis
) -> None:
    hub = running_hub()
    await until_live(hub.follow("a", "0-0"))
    await wait_for_condition(lambda: blocked_clients(redis), what="the hub blocked in Redis")

    newcomer = hub.follow("b", "0-0")
    await until_live(newcomer)
    started = asyncio.get_running_loop().time()
    added = await add(redis, "b")

    assert await collect(newcomer, 1, timeout_s=5) == added
    assert asyncio.get_running_loop().time() - started < 2  # not the hub's 30 s block


async def test_one_connection_serves_every_follower(
    running_hub: Callable[..., StreamHub], redis: Redis
) -> None:
    hub = running_hub(max_streams=200)
    connections_before = len(await redis.client_list())
    followers = [hub.follow(f"s{n % 50}", "0-0") for n in range(100)]  # two per stream
    for follower in followers:
        await until_live(follower)

    added = {f"s{n}": await add(redis, f"s{n}", 2) for n in range(50)}
    received = await asyncio.gather(*(collect(follower, 2) for follower in followers))

    assert received == [added[follower.key] for follower in followers]
    # The hub's own connection, plus at most the pooled ones the catch-ups briefly used.
    assert len(await redis.client_list()) <= connections_before + 2


async def test_catching_up_reads_past_one_page(
    running_hub: Callable[..., StreamHub], redis: Redis
) -> None:
    hub = running_hub()
    ids = await add(redis, "s", 2 * READ_COUNT + 17)
    follower = hub.follow("s", "0-0")

    assert await collect(follower, len(ids)) == ids


async def test_a_slow_follower_holds_a_bounded_queue_and_then_reads_from_its_cursor(
    running_hub: Callable[..., StreamHub], redis: Redis
) -> None:
    hub = running_hub(queue_entries=5)
    follower = hub.follow("s", "0-0")
    await until_live(follower)

    ids = await add(redis, "s", 40)
    await wait_for_condition(holds(lambda: not follower.live), what="the follower dropped")
    assert follower.queue.qsize() == 5

    assert await collect(follower, 40) == ids
    assert follower.live  # joined again once it caught up


async def test_past_max_streams_a_follow_is_refused_until_one_closes(
    running_hub: Callable[..., StreamHub],
) -> None:
    hub = running_hub(max_streams=2)
    first, _ = hub.follow("a", "0-0"), hub.follow("b", "0-0")
    with pytest.raises(TooManyStreams) as refused:
        hub.follow("c", "0-0")
    assert refused.value.retry_after_s > 0

    first.close()
    first.close()  # closing twice frees one place, not two
    hub.follow("c", "0-0")
    assert hub.open_streams == 2
    with pytest.raises(TooManyStreams):
        hub.follow("d", "0-0")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to restart (the session's server is shared)."""
    server = start_redis_server(tmp_path, persistent=True)
    yield server
    server.stop()


async def test_followers_continue_from_their_cursors_after_redis_restarts(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    redis = await connect_redis(own_redis.url)
    hub = StreamHub(own_redis.url, redis, max_streams=10, block_s=1)
    loops = Supervisor()
    loops.start(LOOP, hub.run)
    try:
        follower = hub.follow("s", "0-0")
        first = await add(redis, "s")
        assert await collect(follower, 1) == first

        own_redis.stop()
        await wait_for_condition(
            holds(lambda: [p.loop for p in loops.problems()] == [LOOP]), what="loop failing"
        )
        assert await follower.next_entries(0.2) == []  # still open, waiting
        restarted = start_redis_server(tmp_path, port=own_redis.port, persistent=True)
        own_redis.process = restarted.process  # so the fixture stops it
        later = await add(redis, "s", 3)  # most likely before the hub reconnected

        assert await collect(follower, 3, timeout_s=15) == later
        await wait_for_condition(holds(lambda: not loops.problems()), what="loop working")
        assert await follower.next_entries(0.1) == []  # nothing repeated
    finally:
        await loops.stop()
        await redis.aclose()


async def test_an_idle_hub_reports_a_redis_outage(own_redis: RedisServer) -> None:
    redis = await connect_redis(own_redis.url)
    loops = Supervisor()
    loops.start(LOOP, StreamHub(own_redis.url, redis, max_streams=10, block_s=0.2).run)
    try:
        own_redis.stop()
        await wait_for_condition(
            holds(lambda: [p.loop for p in loops.problems()] == [LOOP]), what="loop failing"
        )
    finally:
        await loops.stop()
        await redis.aclose()
