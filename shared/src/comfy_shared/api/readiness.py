"""The ``/readyz`` answer of every process: its dependency checks and its stuck loops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from comfy_shared.loops import Supervisor

OK = "ok"


class LoopProblem(BaseModel):
    error: str
    failing_for_s: float


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]
    """Each dependency: ``ok``, or why it does not answer."""
    loops: dict[str, LoopProblem]
    """Each background loop that is failing."""


READINESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Readiness, "description": "Ready: every check ok, no loop failing."},
    503: {"model": Readiness, "description": "Not ready: the failing checks and loops."},
}
"""The OpenAPI ``responses`` of a ``/readyz`` route."""


async def check(probe: Callable[[], Awaitable[object]]) -> str:
    """``ok``, or why the dependency ``probe`` talks to does not answer."""
    try:
        await probe()
    except Exception as exc:
        return f"unreachable: {exc}"
    return OK


def readiness_response(checks: Mapping[str, str], loops: Supervisor) -> JSONResponse:
    """200 when every check is ``ok`` and no loop is stuck, else 503 naming what is not."""
    problems = loops.problems()
    ready = not problems and all(value == OK for value in checks.values())
    body = Readiness(
        status="ready" if ready else "not ready",
        checks=dict(checks),
        loops={
            problem.loop: LoopProblem(error=problem.error, failing_for_s=round(problem.since_s, 1))
            for problem in problems
        },
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)
