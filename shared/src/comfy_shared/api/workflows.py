"""``GET /api/v1/workflows`` and ``GET /api/v1/workflows/{name}``, the same on every process."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from comfy_shared.workflows import Template, TemplateLibrary


class WorkflowView(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of ``params`` in ``POST /generate {"workflow": name, "params": {...}}``."""

    @classmethod
    def of(cls, template: Template) -> WorkflowView:
        return cls(
            name=template.name,
            description=template.description,
            parameters=template.json_schema(),
        )


def workflows_router() -> APIRouter:
    """Needs ``app.state.templates``: the process's TemplateLibrary."""
    router = APIRouter(prefix="/workflows", tags=["workflows"])

    @router.get("", response_model=list[WorkflowView])
    async def list_workflows(request: Request) -> list[WorkflowView]:
        """Every template with the JSON Schema of its parameters."""
        return [WorkflowView.of(template) for template in _library(request).all()]

    @router.get("/{name}", response_model=WorkflowView)
    async def get_workflow(name: str, request: Request) -> WorkflowView:
        return WorkflowView.of(_library(request).get(name))

    return router


def _library(request: Request) -> TemplateLibrary:
    library: TemplateLibrary = request.app.state.templates
    return library
