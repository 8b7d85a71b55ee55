"""Connecting to Redis: one async client per process, checked with PING before use.

The client's settings are chosen for a process that must notice a Redis outage quickly, never
hang on one, and never apply a write twice:

- ``socket_timeout`` 5 s: every command we send returns in milliseconds; the only blocking
  reads (the event streams' reader, pub/sub waits) use their own connections with their own
  timeouts. A frozen or partitioned Redis costs a request at most this long, then 503.
- ``socket_connect_timeout`` 2 s and TCP keepalive: a host that is gone is seen as gone.
- ``health_check_interval`` 10 s: a connection idle that long is PINGed before it is used, so
  the first command after a Redis restart does not fail on a dead socket.
- no automatic retries: redis-py would resend a command whose answer was lost, and a resent
  script can apply a change that already landed. A failed command raises; the loops restart
  (``comfy_shared.loops``) and callers get 503 ``redis_unavailable`` with the same guarantees.
- a blocking pool of ``max_connections`` (64): a burst waits up to ``pool_timeout_s`` for a
  free connection instead of failing at once with "too many connections".

Every connection of a process is made here, from a :class:`RedisTarget`: a URL, or Redis
Sentinel. With sentinels, each new connection asks them where the primary is, so once they
promote a replica the next connection goes to it. A connection to a demoted primary that is
still up gets READONLY errors: the connection is dropped and the error raised as a
``ConnectionError``, like an outage, so callers answer 503 and loops start again, which
reconnects to the new primary. (redis-py does this for commands; a Lua script's write on a
replica fails with a plain ``ResponseError`` that names READONLY, which we map the same way.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis as redis_sync
import redis.sentinel as sentinel_sync
from loguru import logger
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

SOCKET_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 2.0
HEALTH_CHECK_INTERVAL_S: Final = 10
MAX_CONNECTIONS: Final = 64
POOL_TIMEOUT_S: Final = 5.0
CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")
DEFAULT_SENTINEL_MASTER: Final = "mymaster"
"""The name ``redis-sentinel`` examples and charts monitor a primary under."""

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a process finds Redis: at ``url``; or, with ``sentinels``, at the primary they
    monitor as ``sentinel_master``, followed through failovers. With sentinels the URL gives
    only the scheme (``rediss``: TLS), user, password and database number of the primary."""

    url: str
    sentinels: tuple[Address, ...] = ()
    sentinel_master: str = DEFAULT_SENTINEL_MASTER
    sentinel_password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """For logs: no password."""
        if not self.sentinels:
            scheme, _, rest = self.url.partition("://")
            return f"{scheme}://{rest.rpartition('@')[2]}"
        where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"sentinel://{where}/{self.sentinel_master}"


def parse_sentinels(text: str) -> tuple[Address, ...]:
    """``"host-1:26379,host-2:26379"`` -> addresses; raises ValueError naming a bad one."""
    addresses = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not HOST:PORT")
        addresses.append((host, int(port)))
    return tuple(addresses)


def as_target(target: RedisTarget | str) -> RedisTarget:
    return target if isinstance(target, RedisTarget) else RedisTarget(target)


def redis_client(
    target: RedisTarget | str,
    *,
    max_connections: int = MAX_CONNECTIONS,
    socket_timeout_s: float | None = SOCKET_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    health_check_interval_s: int = HEALTH_CHECK_INTERVAL_S,
    single_connection: bool = False,
) -> Redis:
    """A client with the settings above (the keywords change them for a connection with
    other needs, such as the stream hub's); ``decode_responses`` is on so values are ``str``.
    ``single_connection``: the client holds one connection of its own (CLIENT ID stays).
    A ``redis+cluster://`` URL gives a Redis Cluster client (see :func:`cluster_client`)."""
    target = as_target(target)
    if is_cluster_url(target.url):
        return cluster_client(target.url, max_connections=max_connections)
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": POOL_TIMEOUT_S,
        "decode_responses": True,
        "protocol": 2,  # RESP2 replies: the shapes the code and its casts expect
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": health_check_interval_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if target.sentinels:
        pool: BlockingConnectionPool = _PrimaryPool(
            target.sentinel_master, _sentinel(target), **_primary_options(target.url), **options
        )
    else:
        pool = BlockingConnectionPool.from_url(target.url, **options)
    client = Redis(connection_pool=pool, single_connection_client=single_connection)
    client.auto_close_connection_pool = True  # aclose() closes its connections (and sentinels)
    return client


def redis_sync_client(target: RedisTarget | str, *, timeout_s: float) -> redis_sync.Redis:
    """A blocking client, for a thread of its own (the task log sink)."""
    target = as_target(target)
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if is_cluster_url(target.url):
        cluster = redis_sync.RedisCluster.from_url(plain_url(target.url), **options)
        return cast(redis_sync.Redis, cluster)
    if not target.sentinels:
        return redis_sync.Redis.from_url(target.url, **options)
    credentials = {
        key: value
        for key, value in _primary_options(target.url).items()
        if key in ("username", "password", "db")
    }
    credentials["ssl"] = target.url.startswith("rediss://")
    manager = sentinel_sync.Sentinel(  # type: ignore[no-untyped-call]
        target.sentinels, sentinel_kwargs=_sentinel_options(target, timeout_s)
    )
    primary = manager.master_for(  # type: ignore[no-untyped-call]
        target.sentinel_master, **credentials, **options
    )
    return cast(redis_sync.Redis, primary)


def is_cluster_url(url: str) -> bool:
    """``redis+cluster://`` or ``rediss+cluster://``: a seed node of a Redis Cluster."""
    return url.startswith(CLUSTER_SCHEMES)


def cluster_client(url: str, *, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A Redis Cluster client with the settings above (``max_connections`` per node). It
    learns the other nodes from the seed in ``url`` and follows slots as they move (a MOVED
    reply is a redirection, not a retry: the command did not run). Typed as ``Redis``: it
    answers every command the project sends, so the code needs no second type; what differs
    on a cluster (keys of one slot per script or MULTI, the stream hub's node, pub/sub) is
    handled where it is used, see the README's "Redis Cluster"."""
    client = RedisCluster.from_url(
        plain_url(url),
        max_connections=max_connections,
        decode_responses=True,
        protocol=2,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), 0),
    )
    return cast(Redis, client)


def plain_url(url: str) -> str:
    """``url`` with its cluster mark dropped (``redis+cluster://h:p`` -> ``redis://h:p``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.removesuffix('+cluster')}{sep}{rest}"


def _sentinel(target: RedisTarget) -> Sentinel:
    options = _sentinel_options(target, CONNECT_TIMEOUT_S)
    return Sentinel(target.sentinels, sentinel_kwargs=options)  # type: ignore[no-untyped-call]


def _sentinel_options(target: RedisTarget, timeout_s: float) -> dict[str, Any]:
    return {
        "password": target.sentinel_password,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": True,
    }


def _primary_options(url: str) -> dict[str, Any]:
    """What the URL says of the primary's connections, its host and port left out (the
    sentinels name those)."""
    options = dict(parse_url(url))
    if "path" in options:
        raise ValueError("a unix:// URL names no primary that sentinels could move")
    options.pop("host", None)
    options.pop("port", None)
    tls = options.pop("connection_class", None) is SSLConnection
    options["connection_class"] = _PrimarySSLConnection if tls else _PrimaryConnection
    return options


class _PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary the sentinels name; one that finds itself on a replica
    (the demoted primary) drops and raises ``ConnectionError``, so the next one asks again."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            # redis-py maps a command's READONLY itself; a script's write fails with this.
            if "-READONLY" not in str(exc):
                raise
            await self.disconnect()
            raise RedisConnectionError("the primary is now a replica") from exc


class _PrimarySSLConnection(_PrimaryConnection, SSLConnection):
    pass


class _PrimaryPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool, blocking like ours; closing it closes the sentinels too."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **options: Any) -> None:
        super().__init__(service_name, sentinel_manager, **options)  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


async def connect_redis(
    target: RedisTarget | str, *, attempts: int = 5, retry_delay_s: float = 0.5
) -> Redis:
    """Return a client whose server answered PING, retrying while Redis starts up.

    Raises the last connection error when every attempt failed.
    """
    target = as_target(target)
    redis = redis_client(target)
    for attempt in range(1, attempts + 1):
        try:
            await redis.ping()
            return redis
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if attempt == attempts:
                await redis.aclose()
                raise
            logger.warning(
                "redis not reachable, retrying", redis=str(target), attempt=attempt, error=str(exc)
            )
            await asyncio.sleep(retry_delay_s * attempt)
    raise AssertionError("unreachable")
