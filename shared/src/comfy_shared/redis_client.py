"""Connecting to Redis: one async client per process, checked with PING before use."""

from __future__ import annotations

import asyncio

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


async def connect_redis(
    url: str,
    *,
    attempts: int = 5,
    retry_delay_s: float = 0.5,
    socket_timeout_s: float = 5.0,
) -> Redis:
    """Return a client whose server answered PING, retrying while Redis starts up.

    ``decode_responses`` is on so values are ``str`` (JSON) everywhere.
    Raises the last connection error when every attempt failed.
    """
    redis = Redis.from_url(
        url,
        decode_responses=True,
        protocol=2,  # RESP2 replies: the shapes the code and its casts expect
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        health_check_interval=30,
    )
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
