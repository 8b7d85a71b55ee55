"""The comfy-service ASGI app."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI

from comfy_service.api.routes import generate, health, tasks
from comfy_service.errors import STATUS_FOR
from comfy_service.lifespan import service_lifespan
from comfy_service.settings import ServiceSettings
from comfy_shared.api.body_limit import BodySizeLimitMiddleware
from comfy_shared.api.errors import install_error_handlers
from comfy_shared.api.request_id import RequestIdMiddleware
from comfy_shared.api.schemas import API_PREFIX
from comfy_shared.api.workflows import workflows_router
from comfy_shared.workflows import TemplateLibrary


def create_app(settings: ServiceSettings) -> FastAPI:
    """Raises TemplateError, naming the file and field, if a workflow template is broken."""
    templates = TemplateLibrary.load(settings.templates_dir)
    app = FastAPI(
        title="comfy-service",
        version=version("comfy-service"),
        description="One ComfyUI server behind a dependable text-to-image API.",
        lifespan=service_lifespan(settings, templates),
    )
    app.state.templates = templates
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app, STATUS_FOR)
    app.include_router(generate.router, prefix=API_PREFIX)
    app.include_router(tasks.router, prefix=API_PREFIX)
    app.include_router(workflows_router(), prefix=API_PREFIX)
    app.include_router(health.router)
    return app
