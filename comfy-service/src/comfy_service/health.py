"""The node's health document in Redis: written every few seconds with a TTL of about three
intervals, so an expired key means the node is gone; deleted on graceful shutdown so routing
stops at once.

Beside it, the node's whole object_info (``comfy_shared.node_object_info``): written in the
same transaction as the first health document that names its hash, then only when ComfyUI's
answer changed; each health write refreshes its expiry (and writes it again if it was lost).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TypeVar

from loguru import logger
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from comfy_service.host_metrics import GpuReader, read_host_metrics
from comfy_service.lifecycle import Lifecycle
from comfy_service.profile import Loaders, ModelProfiler
from comfy_service.prompts import FollowedPrompts
from comfy_service.reachability import Reachability
from comfy_service.speed import SpeedMeter
from comfy_shared.clock import now_ms
from comfy_shared.comfyui import ComfyClient, ComfyError
from comfy_shared.comfyui.client import parse_object_info
from comfy_shared.comfyui.models import model_files
from comfy_shared.models import Capabilities, ComfyStatus, NodeHealth, NodeProfile, NodeSpeed
from comfy_shared.node_object_info import PackedObjectInfo, stage_keep, stage_write
from comfy_shared.redis_keys import RedisKeys


class HealthPublisher:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: RedisKeys,
        comfy: ComfyClient,
        prompts: FollowedPrompts,
        reachability: Reachability,
        speed: SpeedMeter,
        profile: ModelProfiler,
        gpus: GpuReader,
        lifecycle: Lifecycle,
        node_id: str,
        url: str,
        version: str,
        started_at: datetime,
        ttl_s: int,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._comfy = comfy
        self._prompts = prompts
        self._reachability = reachability
        self._speed = speed
        self._profile = profile
        self._stored_profile_version: int | None = None
        """The version of the learned profile known to be in Redis."""
        self._gpus = gpus
        self._lifecycle = lifecycle
        self._node_id = node_id
        self._url = url
        self._version = version
        self._started_at = started_at
        self._ttl_s = ttl_s
        self._capabilities: Capabilities | None = None
        self._object_info: PackedObjectInfo | None = None
        self._stored_sha256: str | None = None
        """The object_info known to be in Redis (None: write it with the next health)."""

    def loaders(self) -> Loaders | None:
        """The model loaders ComfyUI offers (None until it answered once)."""
        return self._capabilities.models if self._capabilities is not None else None

    async def refresh_capabilities(self) -> bool:
        """Re-read what ComfyUI offers (at start, and after it restarted); False if it failed."""
        try:
            body = await self._comfy.object_info_json()
        except ComfyError as exc:
            logger.warning("could not read comfyui capabilities", error=str(exc))
            return False
        packed = await asyncio.to_thread(PackedObjectInfo.pack, body)  # MBs with many packs
        object_info = parse_object_info(body)
        self._capabilities = Capabilities(
            node_classes=sorted(object_info),
            models=model_files(object_info),
            model_folders=await self._model_folders(),
            object_info_sha256=packed.sha256,
        )
        self._object_info = packed
        logger.info(
            "comfyui capabilities read",
            node_classes=len(object_info),
            object_info_sha256=packed.sha256[:12],
            object_info_bytes=packed.json_bytes,
        )
        return True

    async def _model_folders(self) -> dict[str, list[str]]:
        """Each model folder's files (what the ComfyUI gateway lists as ``/models``); a
        failure leaves them out and is logged, graphs are placed by ``models`` anyway."""
        try:
            return {
                folder: await self._comfy.models_in(folder)
                for folder in await self._comfy.model_folders()
            }
        except ComfyError as exc:
            logger.warning("could not read comfyui model folders", error=str(exc))
            return {}

    async def publish_once(self) -> NodeHealth:
        health = await self.build()
        packed = self._object_info
        profile_version = self._profile.version
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(
                self._keys.node_health(self._node_id), health.model_dump_json(), ex=self._ttl_s
            )
            pipe.zadd(self._keys.nodes(), {self._node_id: now_ms()})
            if health.speed is not None:
                # Apart from the health document, and without expiry: a restart that takes
                # longer than the health TTL still starts from the speed measured before.
                pipe.set(self._keys.node_speed(self._node_id), health.speed.model_dump_json())
            profile_key = self._keys.node_profile(self._node_id)
            profile_checked_at = None
            if profile_version != self._stored_profile_version:  # the same, kept when learned
                pipe.set(profile_key, self._profile.learned().model_dump_json())
            else:  # still there? (a Redis that came back empty lost it)
                profile_checked_at = len(pipe)  # commands staged so far (a cluster pipeline too)
                pipe.exists(profile_key)
            if packed is not None:
                self._stage_object_info(pipe, packed)
            replies = await pipe.execute()
        gone = profile_checked_at is not None and not replies[profile_checked_at]
        self._stored_profile_version = None if gone else profile_version
        if packed is not None:
            await self._object_info_written(packed, kept=bool(replies[-1]))
        return health

    def _stage_object_info(self, pipe: Pipeline, packed: PackedObjectInfo) -> None:
        if packed.sha256 == self._stored_sha256:
            stage_keep(pipe, self._keys, self._node_id, self._ttl_s)
        else:
            stage_write(pipe, self._keys, self._node_id, packed, self._ttl_s)

    async def _object_info_written(self, packed: PackedObjectInfo, *, kept: bool) -> None:
        """``kept``: the document is in Redis (written, or its expiry refreshed). If it was
        gone, it is written now rather than a health interval later."""
        if not kept:
            logger.info("object_info missing from redis; writing it again")
            async with self._redis.pipeline(transaction=True) as pipe:
                stage_write(pipe, self._keys, self._node_id, packed, self._ttl_s)
                await pipe.execute()
        self._stored_sha256 = packed.sha256

    async def withdraw(self) -> None:
        await self._redis.delete(
            self._keys.node_health(self._node_id), self._keys.node_object_info(self._node_id)
        )
        self._gpus.close()
        logger.info("health withdrawn")

    async def build(self) -> NodeHealth:
        comfy = await self._comfy_status()
        if comfy.reachable and self._capabilities is None:
            await self.refresh_capabilities()
        if comfy.reachable:
            self._profile.observe_vram(comfy.vram_total_bytes, comfy.vram_free_bytes)
        host = read_host_metrics()
        return NodeHealth(
            node_id=self._node_id,
            url=self._url,
            version=self._version,
            started_at=self._started_at,
            comfyui=comfy,
            tasks_in_flight=await self._prompts.count(),
            cpu_percent=host.cpu_percent,
            ram_used_bytes=host.ram_used_bytes,
            ram_total_bytes=host.ram_total_bytes,
            gpus=await self._gpus.sample(),
            capabilities=self._capabilities or Capabilities(),
            speed=self._speed.current(),
            profile=self._profile.current(),
            lifecycle=self._lifecycle.current(),
            ttl_s=self._ttl_s,
        )

    async def _comfy_status(self) -> ComfyStatus:
        try:
            stats = await self._comfy.system_stats()
            queue = await self._comfy.get_queue()
        except ComfyError as exc:
            self._reachability.unreachable(str(exc))
            down_for_s = round(self._reachability.down_for_s(), 3)
            return ComfyStatus(reachable=False, error=str(exc), down_for_s=down_for_s)
        self._reachability.reachable()
        device = stats.device
        return ComfyStatus(
            reachable=True,
            version=stats.system.comfyui_version,
            queue_running=len(queue.running),
            queue_pending=len(queue.pending),
            device=device.name if device else None,
            vram_total_bytes=device.vram_total if device else None,
            vram_free_bytes=device.vram_free if device else None,
            required_frontend_version=_text(
                (stats.system.model_extra or {}).get("required_frontend_version")
            ),
            pytorch_version=stats.system.pytorch_version,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


Kept = TypeVar("Kept", bound=BaseModel)


async def last_measured_speed(redis: Redis, keys: RedisKeys, node_id: str) -> NodeSpeed | None:
    """The speed a previous run of this node measured: a restarted service keeps placing well
    from its first task."""
    return await _last_kept(redis, keys.node_speed(node_id), NodeSpeed)


async def last_learned_profile(redis: Redis, keys: RedisKeys, node_id: str) -> NodeProfile | None:
    """What a previous run of this node learned of its models and shapes."""
    return await _last_kept(redis, keys.node_profile(node_id), NodeProfile)


async def _last_kept(redis: Redis, key: str, kind: type[Kept]) -> Kept | None:
    raw = await redis.get(key)
    if raw is None:
        return None
    try:
        return kind.model_validate_json(raw)
    except ValueError:
        return None  # written by an incompatible version
