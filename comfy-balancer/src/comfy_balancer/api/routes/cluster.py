from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from comfy_balancer.deps import CallerOf, State
from comfy_balancer.registry import NodeState
from comfy_shared.api.openapi import REDIS_UNAVAILABLE, error_responses
from comfy_shared.clock import now_ms, utc_now
from comfy_shared.models import Band, NodeHealth

router = APIRouter(tags=["cluster"])
_REDIS = error_responses(REDIS_UNAVAILABLE)


class NodeOut(BaseModel):
    node_id: str
    state: NodeState
    url: str | None
    slots: int
    in_flight: int
    recent_failures: int
    last_seen: datetime
    health: NodeHealth | None


class QueueOut(BaseModel):
    pending: int
    by_band: dict[Band, int] = Field(
        description="Waiting tasks per band (bands with none left out)."
    )
    aged: int = Field(description="Batch tasks that waited `--batch-max-wait-s`: they go first.")
    oldest_wait_s: float | None


@router.get("/nodes", response_model=list[NodeOut], responses=_REDIS)
async def list_nodes(state: State, caller: CallerOf) -> list[NodeOut]:
    """Every node that ever published health: its health document (null once dead), slots,
    tasks in flight and state (ready, busy, comfyui-down, dead). The run times and VRAM each
    node learned per workflow shape (``health.profile``) are every tenant's work: only an
    admin key sees them; other keys get them empty."""
    return [
        NodeOut(
            node_id=node.node_id,
            state=node.state,
            url=node.url,
            slots=node.slots,
            in_flight=node.in_flight,
            recent_failures=node.recent_failures,
            last_seen=datetime.fromtimestamp(node.last_seen_ms / 1000, tz=utc_now().tzinfo),
            health=node.health if caller.sees_every_tenant else _without_shapes(node.health),
        )
        for node in await state.registry.read()
    ]


def _without_shapes(health: NodeHealth | None) -> NodeHealth | None:
    if health is None:
        return None
    profile = health.profile.model_copy(update={"shape_run_s": {}, "shape_vram_bytes": {}})
    return health.model_copy(update={"profile": profile})


@router.get("/queue", response_model=QueueOut, responses=_REDIS)
async def queue_stats(state: State) -> QueueOut:
    stats = await state.queue.stats()
    oldest = stats.oldest_queued_ms
    return QueueOut(
        pending=stats.pending,
        by_band=stats.by_band,
        aged=stats.aged,
        oldest_wait_s=round((now_ms() - oldest) / 1000, 3) if oldest is not None else None,
    )
