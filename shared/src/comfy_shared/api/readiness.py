"""The ``/readyz`` answer of every process: its dependency checks and its stuck loops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi.responses import JSONResponse

from comfy_shared.loops import Supervisor

OK = "ok"


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
    body = {
        "status": "ready" if ready else "not ready",
        "checks": dict(checks),
        "loops": {
            problem.loop: {"error": problem.error, "failing_for_s": round(problem.since_s, 1)}
            for problem in problems
        },
    }
    return JSONResponse(body, status_code=200 if ready else 503)
