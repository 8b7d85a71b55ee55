"""The comfy-balancer ASGI app."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI

from comfy_balancer.api.routes import cluster, generate, health, tasks
from comfy_balancer.errors import STATUS_FOR
from comfy_balancer.lifespan import balancer_lifespan
from comfy_balancer.settings import BalancerSettings
from comfy_shared.api.body_limit import BodySizeLimitMiddleware
from comfy_shared.api.errors import install_error_handlers
from comfy_shared.api.request_id import RequestIdMiddleware
from comfy_shared.api.schemas import API_PREFIX
from comfy_shared.api.workflows import workflows_router
from comfy_shared.workflows import TemplateLibrary


def create_app(settings: BalancerSettings) -> FastAPI:
    """Raises TemplateError, naming the file and field, if a workflow template is broken."""
    templates = TemplateLibrary.load(settings.templates_dir)
    app = FastAPI(
        title="comfy-balancer",
        version=version("comfy-balancer"),
        description="One text-to-image API in front of many comfy-service nodes.",
        lifespan=balancer_lifespan(settings, templates),
    )
    app.state.templates = templates
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app, STATUS_FOR)
    for router in (generate.router, tasks.router, cluster.router, workflows_router()):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router)
    return app
