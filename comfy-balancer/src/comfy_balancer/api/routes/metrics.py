"""``GET /metrics``: Prometheus' scrape (README "Metrics"); an admin key when auth is on."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric

from comfy_balancer.deps import State, require_admin
from comfy_balancer.lifespan import BalancerState
from comfy_balancer.metrics import exposition, fleet_families

router = APIRouter(dependencies=[Depends(require_admin)])


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State) -> Response:
    text = exposition(state.metrics, await _fleet(state), streams=state.stream_hub.clients)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def _fleet(state: BalancerState) -> list[Metric]:
    """The fleet gauges if this replica holds the lease to export them, else none."""
    if not await state.fleet_lease.hold():
        return []
    dead_letters = await state.redis.zcard(state.keys.webhook_dead())
    budgets = await state.intake.budgets.uses(await state.keystore.list())
    return fleet_families(
        await state.queue.stats(),
        await state.registry.read(),
        dead_letters=dead_letters,
        budgets=budgets,
    )
