"""The comfy-service ASGI app."""

from __future__ import annotations

from fastapi import FastAPI
from loguru import logger

from comfy_service.api.answers import INTERNAL_TOKEN
from comfy_service.api.routes import comfyui_files, generate, health, metrics, tasks
from comfy_service.deps import get_state
from comfy_service.errors import STATUS_FOR
from comfy_service.lifespan import service_lifespan
from comfy_service.settings import ServiceSettings
from comfy_service.warmup import load_warm_up
from comfy_shared.access import TRUSTED, Caller
from comfy_shared.api.app import build_app, task_history_router
from comfy_shared.api.internal_auth import InternalTokenMiddleware, is_loopback
from comfy_shared.workflows import TemplateLibrary


def create_app(settings: ServiceSettings) -> FastAPI:
    """Raises TemplateError, naming the file and field, if a workflow template is broken
    or the warm-up cannot run as configured."""
    templates = TemplateLibrary.load(settings.templates_dir)
    warm_up = (
        load_warm_up(settings.warmup_workflow, settings.warmup_params, templates)
        if settings.warmup_workflow
        else None
    )
    app = build_app(
        distribution="comfy-service",
        description="One ComfyUI server behind a dependable text-to-image API.",
        lifespan=service_lifespan(settings, templates, warm_up),
        status_for=STATUS_FOR,
        routers=[
            generate.router,
            tasks.router,
            task_history_router(get_state, trusted_caller),
            comfyui_files.router,
        ],
        templates=templates,
        settings=settings,
        health=health.router,
        authenticate=trusted_caller,
        credentials=INTERNAL_TOKEN,
    )
    app.include_router(metrics.router)
    if settings.internal_token is not None:
        app.add_middleware(
            InternalTokenMiddleware, token=settings.internal_token.get_secret_value()
        )
    elif not is_loopback(settings.host):
        logger.warning(
            "the API is open to anyone who can reach this port: set COMFY_INTERNAL_TOKEN "
            "(the balancer's too) unless only trusted clients can",
            host=settings.host,
            port=settings.port,
        )
    return app


async def trusted_caller() -> Caller:
    """A service serves whoever holds its internal token (its balancers): no API keys here."""
    return TRUSTED
