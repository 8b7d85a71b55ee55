"""A node's whole ``GET /object_info`` in Redis (``RedisKeys.node_object_info``).

Its comfy-service writes it when it first reads its ComfyUI and again only when what ComfyUI
answers changed (a restart with other node packs or model files); every health publish
refreshes its expiry, in the same transaction as the health document, whose capabilities
carry its ``sha256``. Readers (the balancer's fleet catalog) compare that hash with the one
they hold and read the document only when it changed.

Stored compressed: a ComfyUI with about 2,000 node classes (many node packs, a hundred model
files) answers 2.2 MB of compact JSON, which zlib at level 6 makes 210 KB in 25 ms (and back
in 4 ms); base64, which the text-mode Redis clients need, brings it to 280 KB. Fields:
``sha256`` (of the compact UTF-8 JSON), ``encoding`` (``zlib+base64``), ``json_bytes``,
``data``. Packing and unpacking are CPU work of tens of milliseconds for such a size: run them
off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from comfy_shared.redis_keys import RedisKeys

ENCODING = "zlib+base64"
COMPRESSION_LEVEL = 6
"""Level 9 saves 1.5 % more for twice the time."""


class CorruptObjectInfo(ValueError):
    """The stored document does not decode to the JSON object its hash names."""


@dataclass(frozen=True, slots=True)
class PackedObjectInfo:
    sha256: str
    json_bytes: int
    data: str
    """base64 of the zlib-compressed compact JSON."""

    @classmethod
    def pack(cls, object_info: Mapping[str, Any]) -> PackedObjectInfo:
        raw = json.dumps(object_info, separators=(",", ":"), ensure_ascii=False).encode()
        data = base64.b64encode(zlib.compress(raw, COMPRESSION_LEVEL)).decode("ascii")
        return cls(hashlib.sha256(raw).hexdigest(), len(raw), data)

    def unpack(self) -> dict[str, Any]:
        """The object_info; :class:`CorruptObjectInfo` unless it matches its hash."""
        try:
            raw = zlib.decompress(base64.b64decode(self.data, validate=True))
        except (ValueError, zlib.error) as exc:
            raise CorruptObjectInfo(f"object_info {self.sha256[:12]}: {exc}") from exc
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise CorruptObjectInfo(f"object_info {self.sha256[:12]}: hash mismatch")
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise CorruptObjectInfo(f"object_info {self.sha256[:12]}: not an object")
        return value


def stage_write(
    pipe: Pipeline, keys: RedisKeys, node_id: str, packed: PackedObjectInfo, ttl_s: int
) -> None:
    """Queue the document's write on ``pipe``; the last reply is that of its ``EXPIRE``."""
    key = keys.node_object_info(node_id)
    pipe.hset(
        key,
        "sha256",
        packed.sha256,
        items=["encoding", ENCODING, "json_bytes", packed.json_bytes, "data", packed.data],
    )
    pipe.expire(key, ttl_s)


def stage_keep(pipe: Pipeline, keys: RedisKeys, node_id: str, ttl_s: int) -> None:
    """Queue the refresh of the document's expiry; its reply is 0 if the document is gone
    (expired while the node could not publish, or Redis lost it): write it again then."""
    pipe.expire(keys.node_object_info(node_id), ttl_s)


async def read_packed(redis: Redis, keys: RedisKeys, node_id: str) -> PackedObjectInfo | None:
    """The node's stored document, or None if it has none (or one this code cannot read)."""
    fields = cast(dict[str, str], await redis.hgetall(keys.node_object_info(node_id)))
    if fields.get("encoding") != ENCODING:
        return None
    try:
        return PackedObjectInfo(fields["sha256"], int(fields["json_bytes"]), fields["data"])
    except (KeyError, ValueError):
        return None
