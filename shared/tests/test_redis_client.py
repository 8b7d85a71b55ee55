import asyncio
from pathlib import Path

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from comfy_shared.redis_client import (
    MAX_CONNECTIONS,
    connect_redis,
    is_cluster_url,
    plain_url,
    redis_client,
)
from comfy_stack.embedded_redis import start_redis_server
from comfy_stack.ports import free_port
from comfy_testkit.redis_cluster import RedisClusterServers
from comfy_testkit.waiting import wait_for_condition


async def test_connects_to_a_live_server(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    assert await client.ping()
    await client.aclose()


async def test_gives_up_with_a_connection_error_when_nothing_listens() -> None:
    with pytest.raises(RedisConnectionError):
        await connect_redis(f"redis://127.0.0.1:{free_port()}/0", attempts=2, retry_delay_s=0.01)


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_the_first_command_after_a_redis_restart_succeeds(tmp_path: Path) -> None:
    server = start_redis_server(tmp_path)
    client = await connect_redis(server.url)
    try:
        await client.set("k", "before")
        server.stop()
        await wait_for_condition(lambda: refused(server.port), what="redis down")
        server = start_redis_server(tmp_path, port=server.port)

        assert await client.set("k", "after")  # the pooled connection died: a new one is made
    finally:
        await client.aclose()
        server.stop()


async def test_a_burst_beyond_the_pool_waits_for_a_connection(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    try:
        replies = await asyncio.gather(*(client.incr("n") for _ in range(4 * MAX_CONNECTIONS)))
        assert sorted(replies) == list(range(1, 4 * MAX_CONNECTIONS + 1))
    finally:
        await client.aclose()


def test_a_cluster_url_names_a_seed_node_of_a_redis_cluster() -> None:
    assert is_cluster_url("redis+cluster://10.0.0.5:7000/0")
    assert is_cluster_url("rediss+cluster://:secret@h:7000")
    assert not is_cluster_url("redis://10.0.0.5:6379/0")
    assert plain_url("rediss+cluster://:secret@h:7000/0") == "rediss://:secret@h:7000/0"
    assert isinstance(redis_client("redis+cluster://127.0.0.1:7000/0"), RedisCluster)


async def test_connects_to_a_redis_cluster_and_routes_each_key_to_its_primary(
    redis_cluster: RedisClusterServers,
) -> None:
    client = await connect_redis(redis_cluster.url)
    try:
        for n in range(30):
            await client.set(f"k{n}", n)
    finally:
        await client.aclose()
    holding = []
    for node in redis_cluster.clients():
        with node:
            holding.append(node.dbsize())
    assert sum(holding) == 30
    assert all(holding), holding  # thirty keys land on every primary
