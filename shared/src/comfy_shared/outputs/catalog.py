"""Which finished tasks hold which stored outputs, and when those outputs expire.

A blob may be held by many tasks (identical bytes are stored once), so it is deleted only when
the last task holding it is released: by its TTL, or by the size cap (oldest finished first).
Only finished tasks hold outputs, so retention never touches the output of an unfinished task.

Deleting races with storing: a node may store bytes that are being deleted (the blob was
there, so it wrote nothing) and hold them a moment later. So a release marks each blob it
dooms as *deleting* until the blob is gone, a hold refuses blobs marked so (the node waits and
stores them again), and a node checks its blobs exist once held: from then on nothing deletes
them. A mark older than :data:`STALE_DELETE_MS` is a deleter that died; the next sweep
finishes its work.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Final, cast

from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.lua import LuaScript
from comfy_shared.outputs.store import BlobMissing, OutputStore, StoredBlob, StoreUnavailable
from comfy_shared.redis_keys import RedisKeys

STALE_DELETE_MS: Final = 60_000
BUSY_RETRIES: Final = 100
BUSY_PAUSE_S: Final = 0.05
"""How long a hold waits for blobs being deleted (a deletion takes milliseconds)."""

_KEYS = ("refs", "sizes", "total", "expiry", "finished", "held", "deleting")

_HOLD = LuaScript(
    keys=_KEYS,
    args=("task_id", "blobs", "expires_ms", "finished_ms", "fresh_after_ms"),
    body="""
if redis.call('EXISTS', KEY.held) == 1 then return {'already'} end
local blobs = cjson.decode(ARG.blobs)
local busy = {}
for _, blob in ipairs(blobs) do
  local since = redis.call('HGET', KEY.deleting, blob[1])
  if since and tonumber(since) > tonumber(ARG.fresh_after_ms) then table.insert(busy, blob[1]) end
end
if #busy > 0 then return {'busy', unpack(busy)} end
for _, blob in ipairs(blobs) do
  if redis.call('HINCRBY', KEY.refs, blob[1], 1) == 1 then
    redis.call('HSET', KEY.sizes, blob[1], blob[2])
    redis.call('INCRBY', KEY.total, blob[2])
  end
  redis.call('RPUSH', KEY.held, blob[1])
end
redis.call('ZADD', KEY.expiry, ARG.expires_ms, ARG.task_id)
if ARG.finished_ms ~= '' then redis.call('ZADD', KEY.finished, ARG.finished_ms, ARG.task_id) end
return {'held'}
""",
)

_RELEASE = LuaScript(
    keys=_KEYS,
    args=("task_id", "now_ms"),
    body="""
local doomed = {}
for _, digest in ipairs(redis.call('LRANGE', KEY.held, 0, -1)) do
  if redis.call('HINCRBY', KEY.refs, digest, -1) <= 0 then
    redis.call('HDEL', KEY.refs, digest)
    local size = redis.call('HGET', KEY.sizes, digest)
    if size then
      redis.call('DECRBY', KEY.total, size)
      redis.call('HDEL', KEY.sizes, digest)
    end
    redis.call('HSET', KEY.deleting, digest, ARG.now_ms)
    table.insert(doomed, digest)
  end
end
redis.call('DEL', KEY.held)
redis.call('ZREM', KEY.expiry, ARG.task_id)
redis.call('ZREM', KEY.finished, ARG.task_id)
return doomed
""",
)

_ABANDONED = LuaScript(
    keys=("refs", "deleting"),
    args=("now_ms", "stale_before_ms"),
    body="""
local doomed = {}
local marks = redis.call('HGETALL', KEY.deleting)
for i = 1, #marks, 2 do
  if tonumber(marks[i + 1]) <= tonumber(ARG.stale_before_ms) then
    if redis.call('HEXISTS', KEY.refs, marks[i]) == 1 then
      redis.call('HDEL', KEY.deleting, marks[i])  -- held again meanwhile: it stays
    else
      redis.call('HSET', KEY.deleting, marks[i], ARG.now_ms)  -- this sweep deletes it now
      table.insert(doomed, marks[i])
    end
  end
end
return doomed
""",
)


@dataclass(frozen=True, slots=True)
class Hold:
    """What a hold did: ``held`` now, held ``already`` (an earlier finish of the same task),
    or refused because these blobs are being deleted (``busy``)."""

    outcome: str
    busy: tuple[str, ...] = ()


class OutputCatalog:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._hold = _HOLD.register(redis)
        self._release = _RELEASE.register(redis)
        self._abandoned = _ABANDONED.register(redis)

    def _names(self, task_id: str) -> dict[str, str]:
        keys = self._keys
        return {
            "refs": keys.outputs_refs(),
            "sizes": keys.outputs_sizes(),
            "total": keys.outputs_bytes(),
            "expiry": keys.outputs_expiry(),
            "finished": keys.outputs_finished(),
            "held": keys.outputs_of_task(task_id),
            "deleting": keys.outputs_deleting(),
        }

    async def hold(
        self,
        task_id: str,
        blobs: list[StoredBlob],
        *,
        finished_ms: int | None,
        expires_ms: int,
        now_ms: int,
    ) -> Hold:
        """Hold ``blobs`` for ``task_id`` (a task, or another holder such as
        :func:`inputs_holder`) until ``expires_ms``. Only a holder with ``finished_ms`` counts
        for the size cap: the inputs of a task that has not ended are never evicted."""
        answer: list[str] = await self._hold(
            keys=self._names(task_id),
            args={
                "task_id": task_id,
                "blobs": json.dumps([[blob.digest, blob.size] for blob in blobs]),
                "expires_ms": expires_ms,
                "finished_ms": "" if finished_ms is None else finished_ms,
                "fresh_after_ms": now_ms - STALE_DELETE_MS,
            },
        )
        outcome, *busy = answer
        return Hold(outcome, tuple(busy))

    async def release(self, task_id: str, *, now_ms: int) -> list[str]:
        """Let go of the task's outputs; returns the blobs no task holds any more, now marked
        deleting: delete each, then call :meth:`deleted`."""
        doomed: list[str] = await self._release(
            keys=self._names(task_id), args={"task_id": task_id, "now_ms": now_ms}
        )
        return doomed

    async def deleted(self, digest: str) -> None:
        await self._redis.hdel(self._keys.outputs_deleting(), digest)

    async def abandoned(self, *, now_ms: int) -> list[str]:
        """Blobs whose deleter died before deleting them (and still held by no task)."""
        doomed: list[str] = await self._abandoned(
            keys={"refs": self._keys.outputs_refs(), "deleting": self._keys.outputs_deleting()},
            args={"now_ms": now_ms, "stale_before_ms": now_ms - STALE_DELETE_MS},
        )
        return doomed

    async def is_held(self, task_id: str) -> bool:
        """False once the task's outputs expired or were released (or it never had any)."""
        return bool(await self._redis.exists(self._keys.outputs_of_task(task_id)))

    async def due(self, *, now_ms: int, limit: int) -> list[str]:
        """Tasks whose outputs' TTL is over."""
        ids = await self._redis.zrangebyscore(
            self._keys.outputs_expiry(), "-inf", now_ms, start=0, num=limit
        )
        return cast(list[str], ids)

    async def oldest(self, limit: int) -> list[str]:
        ids = await self._redis.zrange(self._keys.outputs_finished(), 0, limit - 1)
        return cast(list[str], ids)

    async def total_bytes(self) -> int:
        return int(await self._redis.get(self._keys.outputs_bytes()) or 0)


async def release_outputs(catalog: OutputCatalog, store: OutputStore, task_id: str) -> None:
    """Let go of a task's outputs: the blobs no other task holds are deleted, then its
    manifest. Its downloads answer 410 from now on."""
    for digest in await catalog.release(task_id, now_ms=now_ms()):
        await delete_blob(catalog, store, digest)
    await store.delete_manifest(task_id)


async def delete_blob(catalog: OutputCatalog, store: OutputStore, digest: str) -> None:
    """Delete a blob marked deleting, then lift the mark (holds of it may go on)."""
    await store.delete(digest)
    await catalog.deleted(digest)


def inputs_holder(task_id: str) -> str:
    """The holder of a task's input files (a task id has no colon: no task is called so)."""
    return f"{task_id}:inputs"


async def hold_when_free(
    catalog: OutputCatalog,
    holder: str,
    blobs: list[StoredBlob],
    *,
    finished_ms: int | None,
    expires_ms: int,
) -> Hold:
    """Hold ``blobs``, waiting while some are being deleted. Once held nothing deletes them,
    but one may have gone just before: the caller stores again those :func:`missing_blobs`
    names. Raises :class:`StoreUnavailable` if a deletion never ends."""
    for _ in range(BUSY_RETRIES):
        hold = await catalog.hold(
            holder, blobs, finished_ms=finished_ms, expires_ms=expires_ms, now_ms=now_ms()
        )
        if hold.outcome != "busy":
            return hold
        await asyncio.sleep(BUSY_PAUSE_S)
    raise StoreUnavailable(f"the blobs of {holder} stayed marked for deletion")


async def missing_blobs(store: OutputStore, blobs: list[StoredBlob]) -> list[int]:
    """The positions of ``blobs`` the store does not have."""
    missing = []
    for position, blob in enumerate(blobs):
        try:
            await store.size_of(blob.digest)
        except BlobMissing:
            missing.append(position)
    return missing
