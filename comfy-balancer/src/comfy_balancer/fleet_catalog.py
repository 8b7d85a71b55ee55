"""What the fleet's ComfyUIs offer, as one ComfyUI would describe it (``GET /object_info``),
and the check of a graph against it at the door.

The live nodes (not dead, their health naming an object_info hash) each contribute the whole
object_info their service stored (:mod:`comfy_shared.node_object_info`), merged as
``--object-info-merge`` says (:mod:`comfy_balancer.object_info_merge`). Costs, for a
ComfyUI with a few thousand classes (MBs of JSON):

- documents are cached in memory by hash: one is read from Redis (and decoded, off the event
  loop) only when a node's health names a hash this process does not hold: a node joined, or
  its ComfyUI came back with other node packs or model files. Nodes with the same install
  share one copy; a hash no live node names any more is dropped;
- the merge is rebuilt (off the event loop) only when the set of (node, hash) changes; in
  between, :meth:`FleetCatalog.merged` is a lookup. The node list comes from the registry's
  read of at most ``max_age_s`` ago, which the capability check shares.

A node whose document cannot be read yet (its health names a hash it has not stored, for
a moment) is left out of the merge and tried again at most every ``max_age_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from comfy_balancer.object_info_merge import MergeMode, merge_object_info
from comfy_balancer.registry import NodeRegistry, NodeState, NodeView
from comfy_shared.comfyui import PromptRejected
from comfy_shared.comfyui.validation import (
    Dialect,
    ValidationResult,
    dialect_for,
    validate_prompt,
)
from comfy_shared.node_object_info import CorruptObjectInfo, read_packed
from comfy_shared.redis_keys import RedisKeys

NODES_MAX_AGE_S = 1.0
"""How old a read of the nodes may be (the capability check reads them as often)."""


@dataclass(frozen=True, slots=True)
class _Member:
    node_id: str
    sha256: str
    comfyui_version: str | None


@dataclass(frozen=True, slots=True)
class FleetView:
    """One merge: the nodes in it and the object_info they make together."""

    nodes: tuple[str, ...]
    object_info: dict[str, Any]
    dialect: Dialect
    body: bytes = b"{}"
    """``object_info`` as ``GET /object_info`` sends it, encoded once per view (a large
    install's is megabytes: encoding it at every request would cost tens of ms each)."""
    basis: tuple[tuple[str, str], ...] = ()
    """The (node, hash) pairs the live nodes named when this view was made."""
    complete: bool = True
    """False if a node's document could not be read then: the view is made again soon."""
    made_at: float = 0.0


class FleetCatalog:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        registry: NodeRegistry,
        *,
        merge: MergeMode = "union",
        max_age_s: float = NODES_MAX_AGE_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._registry = registry
        self._merge = merge
        self._max_age_s = max_age_s
        self._documents: dict[str, dict[str, Any]] = {}
        self._view = FleetView((), {}, Dialect.V0_8)
        self._lock = asyncio.Lock()
        self.reads = 0
        """Documents read from Redis so far (each a few hundred KB on a large install)."""

    async def merged(self) -> dict[str, Any]:
        """The fleet's ``GET /object_info`` body (``{}`` while no live node published one).
        Shared with every caller: do not change it."""
        return (await self.view()).object_info

    async def merged_body(self) -> bytes:
        """:meth:`merged`, encoded as JSON once for every request until the fleet changes."""
        return (await self.view()).body

    async def node_class(self, name: str) -> dict[str, Any] | None:
        """One class of :meth:`merged` (``GET /object_info/{class}``), or None."""
        info = (await self.view()).object_info.get(name)
        return info if isinstance(info, dict) else None

    async def validate(
        self, prompt: Mapping[str, Any], *, partial_targets: Collection[str] | None = None
    ) -> ValidationResult | None:
        """What a ComfyUI offering :meth:`merged` would say of ``prompt``; None when no live
        node published an object_info (a cluster starting: nothing to check against)."""
        view = await self.view()
        if not view.nodes:
            return None
        return validate_prompt(
            prompt, view.object_info, partial_targets=partial_targets, dialect=view.dialect
        )

    async def check(self, prompt: Mapping[str, Any]) -> ValidationResult | None:
        """:meth:`validate`, raising :class:`PromptRejected` (ComfyUI's ``error`` and
        ``node_errors``) for a graph ComfyUI would refuse. A partly valid graph passes: its
        result lists the branches that will not run."""
        result = await self.validate(prompt)
        if result is not None and not result.ok:
            raise PromptRejected(result.error or {}, result.node_errors)
        return result

    async def view(self) -> FleetView:
        members = _members(await self._registry.recent(self._max_age_s))
        if self._is_current(members):
            return self._view
        async with self._lock:  # one refresh at a time; the others then find it done
            if not self._is_current(members):
                await self._load_missing(members)
                self._view = await self._make_view(members)
        return self._view

    def _is_current(self, members: Sequence[_Member]) -> bool:
        view = self._view
        if view.basis != _basis(members):
            return False
        return view.complete or time.monotonic() - view.made_at < self._max_age_s

    async def _load_missing(self, members: Sequence[_Member]) -> None:
        for member in members:
            if member.sha256 not in self._documents:
                await self._load(member.node_id)

    async def _load(self, node_id: str) -> None:
        packed = await read_packed(self._redis, self._keys, node_id)
        if packed is None or packed.sha256 in self._documents:
            return
        self.reads += 1
        try:
            document = await asyncio.to_thread(packed.unpack)
        except CorruptObjectInfo as exc:
            logger.warning("node object_info unreadable", node_id=node_id, error=str(exc))
            return
        # Kept under the hash of what was read: if the node stored a newer one than its
        # health names yet, the next health names it and nothing is read again.
        self._documents[packed.sha256] = document
        logger.info("node object_info read", node_id=node_id, sha256=packed.sha256[:12])

    async def _make_view(self, members: Sequence[_Member]) -> FleetView:
        present = [m for m in members if m.sha256 in self._documents]
        named = {m.sha256 for m in members}
        self._documents = {h: doc for h, doc in self._documents.items() if h in named}
        documents = [self._documents[m.sha256] for m in present]
        if len({m.sha256 for m in present}) > 1:
            merged = await asyncio.to_thread(merge_object_info, documents, self._merge)
        else:
            merged = documents[0] if documents else {}
        return FleetView(
            nodes=tuple(m.node_id for m in present),
            object_info=merged,
            dialect=dialect_for(m.comfyui_version for m in present),
            body=await asyncio.to_thread(_encode, merged),
            basis=_basis(members),
            complete=len(present) == len(members),
            made_at=time.monotonic(),
        )


def _encode(object_info: dict[str, Any]) -> bytes:
    return json.dumps(object_info, separators=(",", ":"), ensure_ascii=False).encode()


def _members(nodes: Sequence[NodeView]) -> list[_Member]:
    members = []
    for node in sorted(nodes, key=lambda n: n.node_id):
        sha = node.capabilities.object_info_sha256
        if node.state is NodeState.DEAD or node.health is None or sha is None:
            continue
        members.append(_Member(node.node_id, sha, node.health.comfyui.version))
    return members


def _basis(members: Sequence[_Member]) -> tuple[tuple[str, str], ...]:
    return tuple((m.node_id, m.sha256) for m in members)
