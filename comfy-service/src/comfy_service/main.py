"""The comfy-service ASGI app."""

from __future__ import annotations

from fastapi import FastAPI

from comfy_service.api.routes import generate, health, tasks
from comfy_service.deps import get_state
from comfy_service.errors import STATUS_FOR
from comfy_service.lifespan import service_lifespan
from comfy_service.settings import ServiceSettings
from comfy_shared.access import TRUSTED, Caller
from comfy_shared.api.app import build_app, task_history_router
from comfy_shared.workflows import TemplateLibrary


def create_app(settings: ServiceSettings) -> FastAPI:
    """Raises TemplateError, naming the file and field, if a workflow template is broken."""
    templates = TemplateLibrary.load(settings.templates_dir)
    return build_app(
        distribution="comfy-service",
        description="One ComfyUI server behind a dependable text-to-image API.",
        lifespan=service_lifespan(settings, templates),
        status_for=STATUS_FOR,
        routers=[generate.router, tasks.router, task_history_router(get_state, trusted_caller)],
        templates=templates,
        max_body_bytes=settings.max_body_bytes,
        health=health.router,
        authenticate=trusted_caller,
    )


async def trusted_caller() -> Caller:
    """A service serves whoever reaches it (its balancers; keep it off public networks)."""
    return TRUSTED
