"""Files a running prompt has announced but not stored yet, so ``/view`` can serve them from
the node that has them.

A task's outputs are stored (and recorded) when it ends; but ComfyUI announces each file
earlier, in the ``executed`` event of the node that wrote it, and a client shown that event
asks for the file at once (the frontend shows the image). The WebSocket relay, which sees
those events, records each announced file here (:meth:`LiveOutputs.announce`, with the
node's names) as it renames them for the client (``naming.present_node_output``). ``/view``
of a file not recorded on the task yet fetches it from the task's node, through the
service's ``/tasks/{id}/files/{folder}``, only when it was announced here for that very
prompt: a node's folder holds every user's files under names anyone can guess, and the
service cannot tell them apart.

Redis: ``RedisKeys.gateway_live(task_id)``, a set of ``[folder, subfolder, filename]`` JSON,
kept for the task retention (it is read only while the task runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from comfy_shared.comfyui.common import output_files
from comfy_shared.redis_keys import RedisKeys


def _member(folder: str, subfolder: str, filename: str) -> str:
    return json.dumps([folder, subfolder.strip("/"), filename])


class LiveOutputs:
    def __init__(self, redis: Redis, keys: RedisKeys, *, retention_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._retention_s = retention_s

    async def announce(self, task_id: str, node_id: str, output: Mapping[str, Any]) -> None:
        """Record the files of one ``executed`` event's ``output`` (the node's own names)."""
        files = output_files({node_id: output})
        if not files:
            return
        key = self._keys.gateway_live(task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, *(_member(f.type, f.subfolder, f.filename) for f in files))
            pipe.expire(key, self._retention_s)
            await pipe.execute()

    async def announced(self, task_id: str, folder: str, subfolder: str, filename: str) -> bool:
        key = self._keys.gateway_live(task_id)
        return bool(await self._redis.sismember(key, _member(folder, subfolder, filename)))
