"""``GET /metrics``: Prometheus' scrape, behind the internal token like the API."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from comfy_service.deps import State

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State) -> Response:
    text = await state.metrics.exposition(state.stream_hub.clients)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
