"""FastAPI dependencies: routes reach the process's clients through these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from comfy_balancer.lifespan import BalancerState


def get_state(request: Request) -> BalancerState:
    state: BalancerState = request.app.state.balancer
    return state


State = Annotated[BalancerState, Depends(get_state)]
