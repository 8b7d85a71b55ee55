import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from comfy_shared.redis_client import connect_redis
from comfy_stack.ports import free_port


async def test_connects_to_a_live_server(redis_url: str) -> None:
    client = await connect_redis(redis_url)
    assert await client.ping()
    await client.aclose()


async def test_gives_up_with_a_connection_error_when_nothing_listens() -> None:
    with pytest.raises(RedisConnectionError):
        await connect_redis(f"redis://127.0.0.1:{free_port()}/0", attempts=2, retry_delay_s=0.01)
