"""FastAPI dependencies: routes reach the process's clients through these.

Async on purpose: FastAPI runs a plain function dependency in its thread pool, a thread
hand-off per request for what is an attribute read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from comfy_balancer.lifespan import BalancerState


async def get_state(request: Request) -> BalancerState:
    state: BalancerState = request.app.state.balancer
    return state


State = Annotated[BalancerState, Depends(get_state)]
