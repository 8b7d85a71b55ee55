"""/api/jobs of ComfyUI 0.26.0: the job view (§9.3) and cancel by job id (§9.2).

Registered only when the emulator plays 0.26.0 (`EmulatorConfig.comfyui_version`); with 0.8.0
every path here is an unknown route (404). ComfyUI declares these paths with their `/api`
already in them, so the usual prefixing makes them `/api/jobs...` and `/api/api/jobs...`; a
bare `/jobs` never exists.

- GET  /api/jobs: list with `status`, `workflow_id`, `sort_by`, `sort_order`, `limit`,
  `offset` (bad values -> 400 `{"error"}`); see `comfy_emulator.jobs`.
- GET  /api/jobs/{job_id}: detail, or 404 `{"error": "Job not found"}`.
- POST /api/jobs/{job_id}/cancel: 200 `{"cancelled": bool}`; no id format check.
- POST /api/jobs/cancel `{"job_ids": [...]}`: bad JSON or a non-list -> 400 `{"error"}`; any
  id that is not a canonical UUID string -> 400 `{"error", "invalid_ids"}` and nothing is
  cancelled; else each id best-effort, `{"cancelled": <any acted>}`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from comfy_emulator.jobs import BadJobQuery, JobQuery, find_job, list_jobs
from comfy_emulator.routes import Route, emulator_of
from comfy_emulator.versions import is_canonical_uuid


async def get_jobs(request: web.Request) -> web.Response:
    try:
        query = JobQuery.parse(request.rel_url.query)
    except BadJobQuery as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(list_jobs(emulator_of(request).state.queue, query))


async def get_job(request: web.Request) -> web.Response:
    job = find_job(emulator_of(request).state.queue, request.match_info["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


async def cancel_job(request: web.Request) -> web.Response:
    cancelled = emulator_of(request).cancel_job(request.match_info["job_id"])
    return web.json_response({"cancelled": cancelled})


async def cancel_jobs(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return web.json_response({"error": "Request body must be valid JSON"}, status=400)
    job_ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(job_ids, list):
        return web.json_response({"error": "job_ids must be a list"}, status=400)
    invalid = [_shown(job_id) for job_id in job_ids if not is_canonical_uuid(job_id)]
    if invalid:
        error = {"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}
        return web.json_response(error, status=400)
    emulator = emulator_of(request)
    # Every id is tried: a list comprehension, not any(), which would stop at the first hit.
    results = [emulator.cancel_job(job_id) for job_id in job_ids]
    return web.json_response({"cancelled": any(results)})


def _shown(job_id: Any) -> str:
    """How ComfyUI lists a bad id: strings as they are, anything else as its Python repr."""
    return job_id if isinstance(job_id, str) else repr(job_id)


ROUTES: list[Route] = [
    ("GET", "/api/jobs", get_jobs),
    ("POST", "/api/jobs/cancel", cancel_jobs),
    ("GET", "/api/jobs/{job_id}", get_job),
    ("POST", "/api/jobs/{job_id}/cancel", cancel_job),
]
