"""Packing a node's object_info for Redis, and reading it back from a real Redis."""

import dataclasses
import hashlib
import json

import pytest
from redis.asyncio import Redis

from comfy_shared.node_object_info import (
    CorruptObjectInfo,
    PackedObjectInfo,
    read_packed,
    stage_keep,
    stage_write,
)
from comfy_shared.redis_keys import RedisKeys

KEYS = RedisKeys()
INFO = {
    "Ünïcode": {"input": {"required": {"name": [["café.safetensors"]]}}, "output_node": False},
    "SaveImage": {"input": {"required": {}}, "output_node": True},
}


def test_packing_hashes_the_compact_json_and_unpacks_to_the_same_object() -> None:
    packed = PackedObjectInfo.pack(INFO)
    compact = json.dumps(INFO, separators=(",", ":"), ensure_ascii=False).encode()
    assert (packed.sha256, packed.json_bytes) == (hashlib.sha256(compact).hexdigest(), len(compact))
    assert packed.unpack() == INFO
    assert list(packed.unpack()) == list(INFO)  # class order kept: it is what clients show


@pytest.mark.parametrize(
    "damage",
    [
        {"data": "not base64!"},
        {"data": "aGVsbG8="},  # base64, not zlib
        {"sha256": "0" * 64},
    ],
)
def test_a_damaged_document_is_refused(damage: dict[str, str]) -> None:
    packed = dataclasses.replace(PackedObjectInfo.pack(INFO), **damage)  # type: ignore[arg-type]
    with pytest.raises(CorruptObjectInfo):
        packed.unpack()


def test_a_document_that_is_no_object_is_refused() -> None:
    with pytest.raises(CorruptObjectInfo, match="not an object"):
        PackedObjectInfo.pack(["a", "list"]).unpack()  # type: ignore[arg-type]


async def test_written_read_back_kept_and_none_when_absent(redis: Redis) -> None:
    packed = PackedObjectInfo.pack(INFO)
    assert await read_packed(redis, KEYS, "n1") is None
    async with redis.pipeline(transaction=True) as pipe:
        stage_write(pipe, KEYS, "n1", packed, 7)
        assert (await pipe.execute())[-1] == 1
    assert await read_packed(redis, KEYS, "n1") == packed
    assert await redis.ttl(KEYS.node_object_info("n1")) == 7

    async with redis.pipeline(transaction=True) as pipe:
        stage_keep(pipe, KEYS, "n1", 9)
        stage_keep(pipe, KEYS, "n2", 9)
        assert await pipe.execute() == [1, 0]  # n2 has none: its node writes it again
    assert await redis.ttl(KEYS.node_object_info("n1")) == 9


async def test_a_document_in_another_encoding_reads_as_absent(redis: Redis) -> None:
    await redis.hset(KEYS.node_object_info("n3"), mapping={"encoding": "zstd", "data": "x"})
    assert await read_packed(redis, KEYS, "n3") is None
