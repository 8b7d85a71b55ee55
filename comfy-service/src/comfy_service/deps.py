"""FastAPI dependencies: routes reach the process's clients through these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from comfy_service.lifespan import ServiceState


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]
