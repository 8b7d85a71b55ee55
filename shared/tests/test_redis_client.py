import asyncio
from pathlib import Path

import pytest
import redis as redis_sync
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from comfy_shared.redis_client import (
    MAX_CONNECTIONS,
    Address,
    RedisTarget,
    connect_redis,
    is_cluster_url,
    parse_sentinels,
    plain_url,
    redis_client,
    redis_sync_client,
)
from comfy_stack.embedded_redis import start_redis_server
from comfy_stack.ports import free_port
from comfy_testkit.redis_cluster import RedisClusterServers
from comfy_testkit.sentinel import SentinelGroup
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


# --- Sentinel ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "addresses"),
    [
        ("", ()),
        ("s1:26379", (("s1", 26379),)),
        ("s1:26379, 10.0.0.2:26380,", (("s1", 26379), ("10.0.0.2", 26380))),
        ("[::1]:26379", (("[::1]", 26379),)),
    ],
)
def test_sentinel_addresses_are_parsed(text: str, addresses: tuple[Address, ...]) -> None:
    assert parse_sentinels(text) == addresses


@pytest.mark.parametrize("text", ["s1", "s1:", ":26379", "s1:port", "s1:0", "s1:65536"])
def test_a_sentinel_address_without_a_port_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_sentinels(text)


def test_a_target_in_logs_shows_no_password() -> None:
    assert str(RedisTarget("redis://:secret@redis:6379/0")) == "redis://redis:6379/0"
    sentinels = RedisTarget("redis://:secret@x/0", sentinels=(("s1", 26379), ("s2", 26379)))
    assert str(sentinels) == "sentinel://s1:26379,s2:26379/mymaster"
    assert "secret" not in repr(RedisTarget("redis://x/0", sentinel_password="secret"))


def test_a_unix_socket_url_cannot_name_a_primary_of_sentinels() -> None:
    with pytest.raises(ValueError, match=r"unix://"):
        redis_client(RedisTarget("unix:///run/redis.sock", sentinels=(("s1", 26379),)))


async def test_a_client_follows_the_primary_the_sentinels_promote(
    sentinel_group: SentinelGroup,
) -> None:
    client = await connect_redis(sentinel_group.target())
    try:
        await client.set("k", "before")
        assert await client.wait(1, 5000) == 1
        sentinel_group.primary.process.kill()

        async def written() -> bool:
            try:
                return bool(await client.set("k", "after"))
            except (RedisConnectionError, RedisTimeoutError):  # gone; then none is named a while
                return False

        await wait_for_condition(written, timeout_s=30, interval_s=0.2, what="a new primary")
        assert sentinel_group.primary_address() == ("127.0.0.1", sentinel_group.replica.port)
        with redis_sync.Redis(port=sentinel_group.replica.port, decode_responses=True) as direct:
            assert direct.get("k") == "after"
    finally:
        await client.aclose()


INCR_SCRIPT = "return redis.call('INCR', KEYS[1])"


async def test_a_write_on_a_demoted_primary_drops_the_connection_as_an_outage(
    sentinel_group: SentinelGroup,
) -> None:
    """The primary turns replica under an open connection (as in a partition, before the
    sentinels cut its clients): a script's write fails there with READONLY inside a plain
    ResponseError, which must count as a lost connection so that the next one asks the
    sentinels again. (redis-py maps a command's own READONLY; the sync client's too.)"""
    client = redis_client(sentinel_group.target(), max_connections=1)
    sync_client = redis_sync_client(sentinel_group.target(), timeout_s=2)
    incr = client.register_script(INCR_SCRIPT)
    try:
        assert await incr(keys=["n"]) == 1
        assert sync_client.rpush("lines", "before") == 1
        ours = await client.client_id()
        swap_roles(sentinel_group)

        with pytest.raises(RedisConnectionError):
            await incr(keys=["n"])
        with pytest.raises(RedisConnectionError):
            await client.incr("n")
        with pytest.raises(RedisConnectionError):
            sync_client.rpush("lines", "after")
        with redis_sync.Redis(port=sentinel_group.primary.port) as demoted:
            assert ours not in [int(client["id"]) for client in demoted.client_list()]
    finally:
        await client.aclose()
        sync_client.close()


def swap_roles(group: SentinelGroup) -> None:
    """The replica becomes a primary and the primary its replica, behind the sentinels' back."""
    with redis_sync.Redis(port=group.replica.port) as replica:
        replica.replicaof("NO", "ONE")
    with redis_sync.Redis(port=group.primary.port) as primary:
        primary.replicaof(group.replica.host, group.replica.port)


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
