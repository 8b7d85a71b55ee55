"""``GET /api/v1/workflows`` and ``GET /api/v1/workflows/{name}``, the same on every process."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from comfy_shared.api.openapi import WORKFLOW_NOT_FOUND, error_responses
from comfy_shared.errors import ComfyStackError
from comfy_shared.workflows import Template, TemplateLibrary, UnknownWorkflow


class WorkflowNotFound(ComfyStackError):
    """The workflow named in the path does not exist: 404, where a body naming an unknown
    workflow is 422 (``UnknownWorkflow``)."""


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

    @router.get(
        "/{name}",
        response_model=WorkflowView,
        responses=error_responses(WORKFLOW_NOT_FOUND),
    )
    async def get_workflow(name: str, request: Request) -> WorkflowView:
        """One template with the JSON Schema of its parameters."""
        try:
            template = _library(request).get(name)
        except UnknownWorkflow as exc:
            raise WorkflowNotFound(str(exc)) from None
        return WorkflowView.of(template)

    return router


def _library(request: Request) -> TemplateLibrary:
    library: TemplateLibrary = request.app.state.templates
    return library
