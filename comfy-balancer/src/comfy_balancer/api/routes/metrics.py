"""``GET /metrics``: Prometheus' scrape (README "Metrics"); an admin key when auth is on."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric
from redis.exceptions import RedisError

from comfy_balancer.deps import State, require_admin
from comfy_balancer.lifespan import BalancerState
from comfy_balancer.metrics import exposition, fleet_families, redis_up_family

router = APIRouter(dependencies=[Depends(require_admin)])


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State) -> Response:
    """Answered without Redis too: the replica's own counters and ``comfy_redis_up 0``, so an
    unreachable Redis is an alert of its own rather than a failed scrape."""
    try:
        fleet, reached = await _fleet(state), True
    except RedisError:
        fleet, reached = [], False
    families = [*fleet, redis_up_family(reached=reached)]
    text = exposition(state.metrics, families, streams=state.stream_hub.clients)
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
