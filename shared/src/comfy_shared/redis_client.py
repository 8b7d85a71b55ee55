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
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

from loguru import logger
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

SOCKET_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 2.0
HEALTH_CHECK_INTERVAL_S: Final = 10
MAX_CONNECTIONS: Final = 64
POOL_TIMEOUT_S: Final = 5.0
CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")


def redis_client(url: str, *, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client with the settings above; ``decode_responses`` is on so values are ``str``.
    A ``redis+cluster://`` URL gives a Redis Cluster client (see :func:`cluster_client`)."""
    if is_cluster_url(url):
        return cluster_client(url, max_connections=max_connections)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_TIMEOUT_S,
        decode_responses=True,
        protocol=2,  # RESP2 replies: the shapes the code and its casts expect
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


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


async def connect_redis(url: str, *, attempts: int = 5, retry_delay_s: float = 0.5) -> Redis:
    """Return a client whose server answered PING, retrying while Redis starts up.

    Raises the last connection error when every attempt failed.
    """
    redis = redis_client(url)
    for attempt in range(1, attempts + 1):
        try:
            await redis.ping()
            return redis
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if attempt == attempts:
                await redis.aclose()
                raise
            logger.warning("redis not reachable, retrying", attempt=attempt, error=str(exc))
            await asyncio.sleep(retry_delay_s * attempt)
    raise AssertionError("unreachable")
