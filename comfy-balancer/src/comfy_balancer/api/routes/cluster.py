from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from comfy_balancer.api.answers import NODE_NOT_FOUND
from comfy_balancer.deps import CallerOf, State, require_admin
from comfy_balancer.errors import NodeNotFound
from comfy_balancer.lifespan import BalancerState
from comfy_balancer.registry import NodeState, NodeView
from comfy_shared.access import Caller
from comfy_shared.api.openapi import INVALID_REQUEST, REDIS_UNAVAILABLE, error_responses
from comfy_shared.api.schemas import TaskEta
from comfy_shared.clock import now_ms, utc_now
from comfy_shared.models import Band, NodeHealth, TaskRecord
from comfy_shared.settings import NODE_ID_PATTERN
from comfy_shared.task_queue import FIFO_COUNT_SCAN
from comfy_shared.task_state import TaskStatus

router = APIRouter(tags=["cluster"])
_REDIS = error_responses(REDIS_UNAVAILABLE)


class NodeOut(BaseModel):
    node_id: str
    state: NodeState
    drained: bool = Field(
        description="An admin took it out of rotation (its state: draining or drained while "
        "it is alive): it takes no new task until undrained."
    )
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
    by_tenant: dict[str, int] = Field(
        description="Waiting tasks per tenant (tenants with none left out): every tenant for "
        "an admin key, only its own for any other. Exact under `--queue-policy fair`; under "
        f"`fifo`, counted among the first {FIFO_COUNT_SCAN} waiting tasks of each band."
    )


class QueuedTaskOut(BaseModel):
    task_id: str
    tenant: str
    workflow: str | None = Field(description="Template name, if one was used.")
    band: Band
    priority: int
    position: int = Field(
        description="Tasks of every tenant that start before it (0: the next to start), as "
        "`queue_position` of `GET /api/v1/tasks/{task_id}`."
    )
    eta: TaskEta | None = Field(description="Expected start and finish (null: no node is live).")
    queued_at: datetime = Field(description="When it was submitted.")


class QueuedTasksOut(BaseModel):
    tasks: list[QueuedTaskOut] = Field(
        description="The caller's among the first `limit` waiting tasks of the fleet, in the "
        "order they start (an admin key: all of them)."
    )


@router.get("/nodes", response_model=list[NodeOut], responses=_REDIS)
async def list_nodes(state: State, caller: CallerOf) -> list[NodeOut]:
    """Every node that ever published health: its health document (null once dead), slots,
    tasks in flight and state (ready, busy, comfyui-down, dead; draining while a drained node
    still runs tasks, then drained). The run times and VRAM each node learned per workflow
    shape (``health.profile``) are every tenant's work: only an admin key sees them; other
    keys get them empty."""
    return [_node_out(node, caller) for node in await state.registry.read()]


NodeId = Annotated[str, Path(pattern=NODE_ID_PATTERN, description="The node's id.")]
_DRAIN_ANSWERS = error_responses(INVALID_REQUEST, NODE_NOT_FOUND, REDIS_UNAVAILABLE)


@router.post(
    "/nodes/{node_id}/drain",
    response_model=NodeOut,
    responses=_DRAIN_ANSWERS,
    dependencies=[Depends(require_admin)],
)
async def drain_node(node_id: NodeId, state: State, caller: CallerOf) -> NodeOut:
    """Take the node out of rotation (admin only): it takes no new task and finishes what it
    runs (state ``draining``, then ``drained``). Every replica honours it, and it outlasts
    restarts of the balancer and of the node, until undrained."""
    return _node_out(await _set_drained(state, node_id, drained=True), caller)


@router.post(
    "/nodes/{node_id}/undrain",
    response_model=NodeOut,
    responses=_DRAIN_ANSWERS,
    dependencies=[Depends(require_admin)],
)
async def undrain_node(node_id: NodeId, state: State, caller: CallerOf) -> NodeOut:
    """Put a drained node back in rotation at once (admin only)."""
    return _node_out(await _set_drained(state, node_id, drained=False), caller)


async def _set_drained(state: BalancerState, node_id: str, *, drained: bool) -> NodeView:
    node = await state.registry.set_drained(node_id, drained)
    if node is None:
        raise NodeNotFound(node_id)
    return node


def _node_out(node: NodeView, caller: Caller) -> NodeOut:
    """The node as ``GET /api/v1/nodes`` lists it to ``caller``."""
    return NodeOut(
        node_id=node.node_id,
        state=node.state,
        drained=node.drained,
        url=node.url,
        slots=node.slots,
        in_flight=node.in_flight,
        recent_failures=node.recent_failures,
        last_seen=datetime.fromtimestamp(node.last_seen_ms / 1000, tz=utc_now().tzinfo),
        health=node.health if caller.sees_every_tenant else _without_shapes(node.health),
    )


def _without_shapes(health: NodeHealth | None) -> NodeHealth | None:
    if health is None:
        return None
    profile = health.profile.model_copy(update={"shape_run_s": {}, "shape_vram_bytes": {}})
    return health.model_copy(update={"profile": profile})


@router.get("/queue", response_model=QueueOut, responses=_REDIS)
async def queue_stats(state: State, caller: CallerOf) -> QueueOut:
    """What waits: in all, per band, per tenant (only the caller's own unless admin)."""
    stats = await state.queue.stats()
    oldest = stats.oldest_queued_ms
    by_tenant = await state.queue.waiting_by_tenant(_tenant_filter(caller))
    return QueueOut(
        pending=stats.pending,
        by_band=stats.by_band,
        aged=stats.aged,
        oldest_wait_s=round((now_ms() - oldest) / 1000, 3) if oldest is not None else None,
        by_tenant=by_tenant,
    )


@router.get(
    "/queue/tasks",
    response_model=QueuedTasksOut,
    responses=error_responses(INVALID_REQUEST, REDIS_UNAVAILABLE),
)
async def queued_tasks(
    state: State, caller: CallerOf, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> QueuedTasksOut:
    """The first ``limit`` waiting tasks of the fleet in the order they start, with their
    positions (fleet-wide) and ETAs; listed only where the caller may see them (its tenant's,
    an admin: all), so another key's list skips positions. Read in three round trips."""
    ids = await state.queue.head(limit)
    records = await state.store.find_many(ids) if ids else {}
    tenant = _tenant_filter(caller)
    tasks = []
    for position, task_id in enumerate(ids):
        record = records[task_id]
        if record is None or record.status is not TaskStatus.QUEUED:
            continue  # placed or ended since the queue was read
        if tenant in (None, record.tenant):
            tasks.append(await _queued_task(state, record, position))
    return QueuedTasksOut(tasks=tasks)


async def _queued_task(state: BalancerState, record: TaskRecord, position: int) -> QueuedTaskOut:
    return QueuedTaskOut(
        task_id=record.id,
        tenant=record.tenant,
        workflow=record.workflow,
        band=record.band,
        priority=record.priority,
        position=position,
        eta=await state.pace.expected_times(record, position),  # the pace is read once a second
        queued_at=record.created_at,
    )


def _tenant_filter(caller: Caller) -> str | None:
    """The one tenant the caller may see, or None for every tenant."""
    return None if caller.sees_every_tenant else caller.tenant
