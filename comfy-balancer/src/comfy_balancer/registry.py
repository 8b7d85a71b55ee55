"""The nodes the balancer knows, read from what the services publish in Redis."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.models import Capabilities, NodeHealth, NodeReadiness, NodeSpeed
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.signals import NODE_CHANGED, Signals

FAILURE_WINDOW_MS = 10 * 60 * 1000
UNSEEN_NODE_TTL_S = 10.0


class NodeState(StrEnum):
    READY = "ready"
    BUSY = "busy"
    COMFYUI_DOWN = "comfyui-down"
    DEAD = "dead"
    DRAINING = "draining"
    """Drained by an admin: takes no new task, still runs some."""
    DRAINED = "drained"
    """Drained by an admin and idle: it may be taken down."""
    WARMING_UP = "warming-up"
    WARM_UP_FAILED = "warm-up-failed"
    RECYCLING = "recycling"
    """Its service says it takes no new task (``NodeHealth.lifecycle``)."""


VRAM_HEADROOM_BYTES = 1536 * 1024 * 1024
"""VRAM ComfyUI keeps free of weights: what inference needs (about 1 GB) and its reserve."""


@dataclass(frozen=True, slots=True)
class ModelRoom:
    count: int
    """Models kept when their sizes are not all known."""
    budget_bytes: int | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)

    def keep(self, models: tuple[str, ...]) -> tuple[str, ...]:
        """Of ``models`` (least recently used first), those that stay loaded."""
        if self.budget_bytes is not None and all(model in self.sizes for model in models):
            kept = list(models)
            while len(kept) > 1 and sum(self.sizes[m] for m in kept) > self.budget_bytes:
                kept.pop(0)
            return tuple(kept)
        return models[-self.count :]


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    health: NodeHealth | None
    last_seen_ms: int
    in_flight: int
    slots: int
    recent_failures: int = 0
    speed: NodeSpeed | None = None
    """Measured by the node; the dispatcher fills in an assumption for nodes yet to measure."""
    backlog_s: float = 0.0
    """Expected seconds until the work placed on the node is done (set by the dispatcher)."""
    prefetch_lead_s: float = math.inf
    """A busy node's next slot takes a task only once its placed work is expected to end
    within this many seconds (the dispatcher sets ``--prefetch-lead-s``)."""
    upcoming: tuple[str, ...] = ()
    """The models resident once the work placed on it has run, least recently used first
    (the dispatcher follows the node's queue from what its service says is resident)."""
    drained: bool = False
    """An admin took it out of rotation (``POST /api/v1/nodes/{id}/drain``)."""
    warm_waiting: int = 0
    """Queued tasks the node could run without a switch (the dispatcher counts them)."""

    # Worked out once per view (every field is final): the dispatcher asks every node for
    # them for every task it places, which made them a quarter of a placement's CPU on a
    # large fleet (bench/scale_fleet.py).
    _state: NodeState = field(init=False, repr=False, compare=False)
    _free_slots: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_state", self._work_out_state())
        object.__setattr__(self, "_free_slots", self._work_out_free_slots())

    @property
    def model_room(self) -> ModelRoom:
        """What bounds the models the node keeps loaded: its VRAM less ComfyUI's headroom,
        once the service has seen each model's size; else as many models as it holds now
        (at least one)."""
        health = self.health
        if health is None:
            return ModelRoom(count=1)
        total = health.comfyui.vram_total_bytes
        return ModelRoom(
            count=max(1, len(health.profile.resident)),
            budget_bytes=total - VRAM_HEADROOM_BYTES if total else None,
            sizes=health.profile.model_bytes,
        )

    @property
    def state(self) -> NodeState:
        return self._state

    def _work_out_state(self) -> NodeState:
        if self.health is None:
            return NodeState.DEAD
        lifecycle = self.health.lifecycle.state
        if lifecycle is NodeReadiness.RECYCLING:
            return NodeState.RECYCLING  # its ComfyUI is down on purpose while it restarts
        if not self.health.comfyui.reachable:
            return NodeState.COMFYUI_DOWN
        if self.drained:
            return NodeState.DRAINING if self.in_flight else NodeState.DRAINED
        if lifecycle is not NodeReadiness.READY:
            return NodeState(lifecycle.value)
        if self.in_flight >= self.slots:
            return NodeState.BUSY
        return NodeState.READY

    @property
    def is_live(self) -> bool:
        """Alive with a reachable ComfyUI: it runs tasks, now or once a slot frees."""
        return self.state in (NodeState.READY, NodeState.BUSY)

    @property
    def free_slots(self) -> int:
        return self._free_slots

    def _work_out_free_slots(self) -> int:
        if self.state is not NodeState.READY or self.prefetch_opens_in_s > 0:
            return 0
        return self.slots - self.in_flight

    @property
    def prefetch_opens_in_s(self) -> float:
        """Seconds until a busy node's next slot opens (0: open now, or the node is idle)."""
        return max(0.0, self.backlog_s - self.prefetch_lead_s) if self.in_flight else 0.0

    @property
    def capabilities(self) -> Capabilities:
        return self.health.capabilities if self.health else Capabilities()

    @property
    def url(self) -> str | None:
        return self.health.url if self.health else None


class NodeRegistry:
    def __init__(
        self, redis: Redis, keys: RedisKeys, *, slots: int, allowed: frozenset[str] = frozenset()
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._slots = slots
        self._allowed = allowed
        self._last_read: tuple[float, list[NodeView]] | None = None
        self._ttl_s: dict[str, float] = {}
        # The last document of each node and what it parsed to: the dispatcher reads every
        # node each cycle, and most documents did not change since (a service writes its own
        # every few seconds), so most parses are skipped (bench/scale_fleet.py).
        self._parsed: dict[str, tuple[str, NodeHealth]] = {}
        # The distinct capabilities in use, each one object shared by every node that has it,
        # so the dispatcher checks a graph once per kind of node, not once per node.
        self._capabilities: list[Capabilities] = []

    async def recent(self, max_age_s: float) -> list[NodeView]:
        """The last read of the nodes if it is at most ``max_age_s`` old, else a new one."""
        if self._last_read is not None and time.monotonic() - self._last_read[0] <= max_age_s:
            return self._last_read[1]
        return await self.read()

    async def read(self) -> list[NodeView]:
        """Every known node with its health (None once the health key expired), in two
        round trips whatever the number of nodes."""
        views = await self._read()
        self._last_read = (time.monotonic(), views)
        return views

    async def _read(self) -> list[NodeView]:
        seen = cast(
            "list[tuple[str, float]]",
            await self._redis.zrange(self._keys.nodes(), 0, -1, withscores=True),
        )
        seen = [
            (node_id, ms) for node_id, ms in seen if not self._allowed or node_id in self._allowed
        ]
        if not seen:
            self._parsed, self._capabilities = {}, []
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self._keys.drained_nodes())
            for node_id, _ in seen:
                pipe.get(self._keys.node_health(node_id))
                pipe.zcard(self._keys.node_dispatched(node_id))
                pipe.zcount(self._keys.node_failures(node_id), now_ms() - FAILURE_WINDOW_MS, "+inf")
            drained, *replies = await pipe.execute()
        views = []
        parsed = {}
        for i, (node_id, last_seen) in enumerate(seen):
            raw_health, in_flight, failures = replies[3 * i : 3 * i + 3]
            health = self._parse(node_id, raw_health) if raw_health else None
            if health is not None:
                parsed[node_id] = (raw_health, health)
                self._ttl_s[node_id] = health.ttl_s
            views.append(
                NodeView(
                    node_id=node_id,
                    health=health,
                    last_seen_ms=int(last_seen),
                    in_flight=int(in_flight),
                    slots=self._slots,
                    recent_failures=int(failures),
                    speed=health.speed if health else None,
                    upcoming=tuple(health.profile.resident) if health else (),
                    drained=node_id in drained,
                )
            )
        self._parsed = parsed
        in_use = {id(health.capabilities): health.capabilities for _, health in parsed.values()}
        self._capabilities = list(in_use.values())
        return views

    def _parse(self, node_id: str, raw: str) -> NodeHealth:
        """The node's health document as of ``raw``: the last parse if it did not change,
        with capabilities shared with the nodes that have the same."""
        last = self._parsed.get(node_id)
        if last is not None and last[0] == raw:
            return last[1]
        health = NodeHealth.model_validate_json(raw)
        same = next((c for c in self._capabilities if _same(c, health.capabilities)), None)
        if same is None:
            self._capabilities.append(health.capabilities)
            return health
        return health.model_copy(update={"capabilities": same})

    def ttl_of(self, node_id: str) -> float:
        """How long the node's health document lives, as last seen (a cautious guess for a node
        not seen yet)."""
        return self._ttl_s.get(node_id, UNSEEN_NODE_TTL_S)

    async def find(self, node_id: str) -> NodeView | None:
        return next((node for node in await self.read() if node.node_id == node_id), None)

    async def set_drained(self, node_id: str, drained: bool) -> NodeView | None:
        """Take the node out of rotation (it finishes what it runs) or put it back, on every
        replica and across restarts; None, and nothing marked, for a node that never
        published health."""
        if await self._redis.zscore(self._keys.nodes(), node_id) is None:
            return None
        key = self._keys.drained_nodes()
        await (self._redis.sadd(key, node_id) if drained else self._redis.srem(key, node_id))
        await Signals(self._redis, self._keys).publish(NODE_CHANGED)  # undrained: work at once
        return await self.find(node_id)

    async def record_failure(self, node_id: str) -> None:
        key = self._keys.node_failures(node_id)
        now = now_ms()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {str(now): now})
            pipe.zremrangebyscore(key, "-inf", now - FAILURE_WINDOW_MS)
            pipe.pexpire(key, FAILURE_WINDOW_MS)
            await pipe.execute()


def _same(first: Capabilities, second: Capabilities) -> bool:
    """Equal fields (a model's ``==`` would also compare its cached properties)."""
    return (
        first.node_classes == second.node_classes
        and first.models == second.models
        and first.model_folders == second.model_folders
        and first.object_info_sha256 == second.object_info_sha256
    )
