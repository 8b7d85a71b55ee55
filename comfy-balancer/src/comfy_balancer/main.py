"""The comfy-balancer ASGI app."""

from __future__ import annotations

from fastapi import FastAPI

from comfy_balancer.api.answers import API_KEYS
from comfy_balancer.api.routes import (
    cluster,
    generate,
    groups,
    health,
    keys,
    metrics,
    tasks,
    usage,
    whoami,
)
from comfy_balancer.console import install_console
from comfy_balancer.deps import get_caller, get_state
from comfy_balancer.errors import STATUS_FOR
from comfy_balancer.gateway import install_gateway
from comfy_balancer.gateway.ui import install_ui
from comfy_balancer.lifespan import balancer_lifespan
from comfy_balancer.settings import BalancerSettings
from comfy_balancer.webhooks import routes as webhooks
from comfy_shared.api.app import build_app, task_history_router
from comfy_shared.workflows import TemplateLibrary


def create_app(settings: BalancerSettings) -> FastAPI:
    """Raises TemplateError, naming the file and field, if a workflow template is broken."""
    templates = TemplateLibrary.load(settings.templates_dir)
    app = build_app(
        distribution="comfy-balancer",
        description="One text-to-image API in front of many comfy-service nodes.",
        lifespan=balancer_lifespan(settings, templates),
        status_for=STATUS_FOR,
        routers=[
            generate.router,
            tasks.router,
            task_history_router(get_state, get_caller),
            cluster.router,
            keys.router,
            groups.router,
            usage.router,
            whoami.router,
            webhooks.router,
        ],
        authenticate=get_caller,
        credentials=API_KEYS,
        templates=templates,
        settings=settings,
        health=health.router,
    )
    if settings.comfyui_gateway:
        install_gateway(app)
    app.include_router(metrics.router)
    install_ui(app, settings)
    if settings.console:
        install_console(app)
    return app
