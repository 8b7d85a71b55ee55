"""The node's object_info in Redis beside its health document: what is stored, when it is
written (once per change, counted with Redis keyspace notifications) and when it goes."""

import asyncio
import io
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image
from redis.asyncio import Redis

from comfy_shared.models import NodeHealth
from comfy_shared.node_object_info import read_packed
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import ServiceFactory
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()


async def published_sha(redis: Redis, node_id: str) -> str | None:
    raw = await redis.get(KEYS.node_health(node_id))
    return NodeHealth.model_validate_json(raw).capabilities.object_info_sha256 if raw else None


async def emulator_object_info(emulator: RunningComponent) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        body: dict[str, object] = (await http.get("/object_info")).json()
    return body


@pytest.fixture
async def key_events(redis: Redis) -> AsyncIterator[Counter[str]]:
    """Commands run on the object_info key of node "oi", counted by name (hset, expire...)."""
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    await redis.config_set("notify-keyspace-events", "Khg")
    seen: Counter[str] = Counter()
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"__keyspace@{db}__:{KEYS.node_object_info('oi')}")

    async def count() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                seen[message["data"]] += 1

    counting = asyncio.create_task(count())
    try:
        yield seen
    finally:
        counting.cancel()
        await asyncio.gather(counting, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.config_set("notify-keyspace-events", "")


async def test_the_whole_object_info_is_stored_beside_the_health_and_goes_with_it(
    start_service: ServiceFactory, emulator: RunningComponent, redis: Redis
) -> None:
    service = start_service(emulator.url, node_id="oi")
    sha = await wait_for_condition(lambda: published_sha(redis, "oi"), what="health")

    packed = await read_packed(redis, KEYS, "oi")
    assert packed is not None
    assert packed.sha256 == sha
    assert packed.unpack() == await emulator_object_info(emulator)
    assert len(packed.data) < packed.json_bytes / 3  # compressed, even in base64
    assert 0 < await redis.ttl(KEYS.node_object_info("oi")) <= 2  # the health document's TTL

    service.stop()
    assert await redis.exists(KEYS.node_health("oi"), KEYS.node_object_info("oi")) == 0


async def test_it_is_written_once_per_change_and_again_when_lost(
    start_service: ServiceFactory,
    emulator: RunningComponent,
    control: EmulatorControl,
    redis: Redis,
    key_events: Counter[str],
) -> None:
    service = start_service(emulator.url, node_id="oi")  # health every 0.5 s
    first = await wait_for_condition(lambda: published_sha(redis, "oi"), what="health")
    await wait_for_condition(lambda: _at_least(key_events, "expire", 3), what="three publishes")

    reads = _reads(service)
    await control.restart()  # the service reads object_info again: unchanged
    await wait_for_condition(
        lambda: _read_again(service, reads + 1), what="object_info read after the restart"
    )
    expires = key_events["expire"]
    await wait_for_condition(lambda: _at_least(key_events, "expire", expires + 2), what="ticks")
    assert (key_events["hset"], await published_sha(redis, "oi")) == (1, first)

    await _upload_image(emulator, "new-input.png")  # LoadImage's list changes...
    await control.restart()  # ...and the service reads it again
    second = await wait_for_condition(lambda: _changed(redis, first), what="a new object_info hash")
    await _ticks_after_notified(key_events, hsets=2)  # the notification lags the write
    assert key_events["hset"] == 2
    packed = await read_packed(redis, KEYS, "oi")
    assert packed is not None
    assert packed.sha256 == second
    assert "new-input.png" in str(packed.unpack()["LoadImage"])

    await redis.delete(KEYS.node_object_info("oi"))
    await wait_for_condition(
        lambda: redis.exists(KEYS.node_object_info("oi")), what="the lost document written again"
    )
    await _ticks_after_notified(key_events, hsets=3)
    assert key_events["hset"] == 3


async def _ticks_after_notified(seen: Counter[str], *, hsets: int) -> None:
    """Wait until ``hsets`` writes were notified, then two more publishes (a write too many
    would be seen by then)."""
    await wait_for_condition(lambda: _at_least(seen, "hset", hsets), what=f"{hsets} writes")
    expires = seen["expire"]
    await wait_for_condition(lambda: _at_least(seen, "expire", expires + 2), what="two ticks")


async def _at_least(seen: Counter[str], event: str, count: int) -> bool:
    return seen[event] >= count


def _reads(service: RunningComponent) -> int:
    return service.process.output().count("comfyui capabilities read")


async def _read_again(service: RunningComponent, times: int) -> bool:
    return _reads(service) >= times


async def _changed(redis: Redis, before: str) -> str | None:
    sha = await published_sha(redis, "oi")
    return sha if sha not in (None, before) else None


async def _upload_image(emulator: RunningComponent, name: str) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        answer = await http.post("/upload/image", files={"image": (name, png.getvalue())})
    answer.raise_for_status()
