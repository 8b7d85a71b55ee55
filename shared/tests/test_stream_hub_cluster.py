"""The stream hub on a real three-primary Redis Cluster: one blocking read on the primary that
serves the followed streams' slot, woken there for a newcomer, and a key of another slot
refused."""

from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis, RedisCluster

from comfy_shared.loops import Supervisor
from comfy_shared.stream_hub import StreamHub
from comfy_testkit.waiting import wait_for_condition

SLOT_KEY = "{comfy}"
LONG_BLOCK_S = 30.0
"""Longer than any test waits: a newcomer that had to wait out the hub's read would time out."""


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


@pytest.fixture
async def hub(redis_url: str, redis: Redis) -> AsyncIterator[StreamHub]:
    loops = Supervisor()
    started = StreamHub(redis_url, redis, max_streams=10, block_s=LONG_BLOCK_S, slot_key=SLOT_KEY)
    loops.start("event-streams", started.run)
    yield started
    await loops.stop()


async def blocked_on_the_slots_node(redis: Redis) -> bool:
    cluster = cast(RedisCluster, redis)
    node = cluster.get_node_from_key(SLOT_KEY)
    clients = await cluster.client_list(target_nodes=node)
    return any("b" in str(client.get("flags", "")) for client in clients)


async def test_a_newcomer_is_served_at_once_by_the_read_on_the_slots_primary(
    hub: StreamHub, redis: Redis
) -> None:
    first = hub.follow("{comfy}:a", "0-0")
    assert await first.next_entries(0.01) == []
    await wait_for_condition(
        lambda: blocked_on_the_slots_node(redis), what="the hub blocked on the slot's primary"
    )
    newcomer = hub.follow("{comfy}:b", "0-0")
    assert await newcomer.next_entries(0.01) == []

    added = await redis.xadd("{comfy}:b", {"n": "1"})
    entries = await newcomer.next_entries(5)  # not the hub's 30 s block: it was woken

    assert [entry_id for entry_id, _ in entries] == [added]
    first.close()
    newcomer.close()


async def test_a_stream_of_another_slot_is_refused(hub: StreamHub) -> None:
    with pytest.raises(ValueError, match="not in the hub's slot"):
        hub.follow("elsewhere:events", "0-0")
    assert hub.open_streams == 0
