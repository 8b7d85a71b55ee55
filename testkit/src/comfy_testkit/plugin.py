"""pytest plugin (registered through the ``pytest11`` entry point) with the shared fixtures.

- ``redis_server``: one real Redis server per test session, on a free port.
- ``redis_url``: that server's URL, with the database flushed before each test.
- ``redis``: an async client (decode_responses) for the test, closed afterwards.
- ``process_log_dir``: where child processes of a test write their output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from comfy_shared.redis_client import connect_redis
from comfy_stack.embedded_redis import RedisServer, start_redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis_sync.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = await connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def process_log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "process-logs"
    path.mkdir()
    return path
