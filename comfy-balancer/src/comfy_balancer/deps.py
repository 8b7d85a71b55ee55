"""FastAPI dependencies: routes reach the process's clients through these.

Async on purpose: FastAPI runs a plain function dependency in its thread pool, a thread
hand-off per request for what is an attribute read."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from comfy_balancer.auth.callers import Forbidden, Unauthorized, needed_scope, presented_secret
from comfy_balancer.auth.sessions import require_same_origin, session_caller, sessions_of
from comfy_balancer.lifespan import BalancerState
from comfy_shared.access import Caller, Scope


async def get_state(request: Request) -> BalancerState:
    state: BalancerState = request.app.state.balancer
    return state


State = Annotated[BalancerState, Depends(get_state)]


async def get_caller(request: Request, state: State) -> Caller:
    """Every /api/v1 route depends on this (401 without a valid key, 403 without the scope:
    ``read`` to read, ``submit`` to change); cached per request, so routes reuse it.

    An API key in the request wins; without one, a browser's sign-in cookie stands for the
    key it signed in with, and then a change must come from a page of this origin (the
    cookie travels with any request the browser makes)."""
    needs, secret = needed_scope(request), presented_secret(request)
    if secret is None and state.auth.enabled:
        caller = await session_caller(
            request, sessions=sessions_of(state), auth=state.auth, needs=needs
        )
        if caller is not None:
            if needs is not Scope.READ:
                require_same_origin(request)
            return caller
    return await state.auth.caller(secret, needs=needs)


CallerOf = Annotated[Caller, Depends(get_caller)]


async def may_read(request: Request, state: BalancerState) -> bool:
    """Whether the request's key or session may read: pages use it to send a browser that
    is not signed in to the sign-in page rather than answer 401."""
    try:
        await get_caller(request, state)
    except (Unauthorized, Forbidden):
        return False
    return True


async def require_admin(caller: CallerOf) -> Caller:
    if not caller.may(Scope.ADMIN):
        raise Forbidden(Scope.ADMIN)
    return caller
