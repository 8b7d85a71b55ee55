"""The gateway's HTTP routes, each at ``/x`` and ``/api/x`` as ComfyUI registers them (the
jobs routes only at ``/api/jobs...``, as in ComfyUI). Kept out of the OpenAPI document: they
are ComfyUI's protocol, described in ``comfyui-protocol`` terms, not ``/api/v1``'s.

None of these routes carries a file name in its path (``/view`` takes it in the query), so
none is affected by a ``%2F`` in a path segment. The logic lives in the modules beside this
one; a route reads its request, calls it, and answers as ComfyUI answers.
"""

# No "from __future__ import annotations": FastAPI reads the Annotated dependencies below.
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from comfy_balancer.deps import State
from comfy_balancer.gateway import files, prompts
from comfy_balancer.gateway import queue as user_queue
from comfy_balancer.gateway.errors import GatewayRoute, InvalidQuery
from comfy_balancer.gateway.history import RenderedHistory, history_of, one_history
from comfy_balancer.gateway.identity import UserOf
from comfy_balancer.gateway.jobs import BadJobQuery, JobQuery, find_job, list_jobs
from comfy_balancer.gateway.uploads import Uploads
from comfy_balancer.lifespan import BalancerState
from comfy_shared.api.strict_json import InvalidJsonValue, MalformedJson, parse_strict_json
from comfy_shared.comfyui.prompt_ids import is_canonical_uuid
from comfy_shared.models import is_valid_task_id
from comfy_shared.outputs.catalog import release_outputs

PREFIXES = ("", "/api")


async def get_uploads(request: Request, state: State) -> Uploads:
    """The app's uploads index, made on first use (it needs the lifespan's clients)."""
    uploads: Uploads | None = getattr(request.app.state, "gateway_uploads", None)
    if uploads is None:
        uploads = Uploads(
            redis=state.redis,
            keys=state.keys,
            store=state.outputs,
            catalog=state.catalog,
            hold_s=state.settings.retention_s,
        )
        request.app.state.gateway_uploads = uploads
    return uploads


UploadsOf = Annotated[Uploads, Depends(get_uploads)]


async def get_rendered_history(request: Request) -> RenderedHistory:
    """The replica's rendered history entries (one per app)."""
    rendered: RenderedHistory | None = getattr(request.app.state, "gateway_history", None)
    if rendered is None:
        rendered = request.app.state.gateway_history = RenderedHistory()
    return rendered


RenderedOf = Annotated[RenderedHistory, Depends(get_rendered_history)]


def _empty() -> Response:
    """ComfyUI's answer to POST /queue, /interrupt, /history: 200, no body, no type."""
    return Response(status_code=200)


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; not JSON: 400 (ComfyUI: 500), not an object: ``{}``."""
    document = parse_strict_json(await request.body())
    return document if isinstance(document, dict) else {}


async def post_prompt(request: Request, state: State, user: UserOf, uploads: UploadsOf) -> Response:
    return JSONResponse(await prompts.submit_prompt(request, state, user, uploads))


async def get_prompt(state: State, user: UserOf) -> Response:
    remaining = await user_queue.queue_remaining(state.store, user.tenant)
    return JSONResponse({"exec_info": {"queue_remaining": remaining}})


async def get_queue(state: State, user: UserOf) -> Response:
    return JSONResponse(await user_queue.queue_of(state.store, user.tenant))


async def post_queue(request: Request, state: State, user: UserOf) -> Response:
    body = await _json_object(request)
    if body.get("clear"):
        await user_queue.clear_waiting(state, user)
    if isinstance(body.get("delete"), list):
        await user_queue.delete_waiting(state, user, body["delete"])
    return _empty()


async def post_interrupt(request: Request, state: State, user: UserOf) -> Response:
    try:
        body = await _json_object(request)
    except (MalformedJson, InvalidJsonValue):  # ComfyUI takes no body as "interrupt" too
        body = {}
    await user_queue.interrupt(state, user, body.get("prompt_id"))
    return _empty()


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        raise InvalidQuery(f"{name} must be an integer") from None


async def get_history(
    request: Request, state: State, user: UserOf, rendered: RenderedOf
) -> Response:
    history = await history_of(
        state.store,
        rendered,
        user.tenant,
        max_items=_int_param(request, "max_items"),
        offset=_int_param(request, "offset"),
    )
    return Response(history, media_type="application/json")


async def get_history_entry(prompt_id: str, state: State, user: UserOf) -> Response:
    if not is_valid_task_id(prompt_id):
        return JSONResponse({})
    return JSONResponse(await one_history(state.store, user.tenant, prompt_id))


async def post_history(request: Request, state: State, user: UserOf) -> Response:
    """Forget the user's ended prompts: their records, and their outputs with them."""
    body = await _json_object(request)
    targets: list[Any] = []
    if body.get("clear"):
        targets.extend(await state.store.recent_ids(0, 100_000, user.tenant))
    if isinstance(body.get("delete"), list):
        targets.extend(body["delete"])
    for task_id in targets:
        await _forget(state, user.tenant, task_id)
    return _empty()


async def _forget(state: BalancerState, tenant: str, task_id: Any) -> None:
    record = await user_queue.own_record(state.store, tenant, task_id)
    if record is None or not record.status.is_terminal:
        return
    await state.store.delete(record)
    await release_outputs(state.catalog, state.outputs, record.id)


async def get_jobs(request: Request, state: State, user: UserOf) -> Response:
    try:
        query = JobQuery.parse(request.query_params)
    except BadJobQuery as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(await list_jobs(state.store, user.tenant, query))


async def get_job(job_id: str, state: State, user: UserOf) -> Response:
    found = await find_job(state.store, user.tenant, job_id) if is_valid_task_id(job_id) else None
    if found is None:
        return JSONResponse({"error": "Job not found"}, status_code=404)
    return JSONResponse(found)


async def cancel_job(job_id: str, state: State, user: UserOf) -> Response:
    return JSONResponse({"cancelled": await user_queue.cancel(state, user, job_id)})


async def cancel_jobs(request: Request, state: State, user: UserOf) -> Response:
    try:
        body = parse_strict_json(await request.body())
    except (MalformedJson, InvalidJsonValue):
        return JSONResponse({"error": "Request body must be valid JSON"}, status_code=400)
    job_ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(job_ids, list):
        return JSONResponse({"error": "job_ids must be a list"}, status_code=400)
    invalid = [str(j) for j in job_ids if not (isinstance(j, str) and is_canonical_uuid(j))]
    if invalid:
        error = {"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}
        return JSONResponse(error, status_code=400)
    # Every id is tried: a list, not any(), which would stop at the first one cancelled.
    results = [await user_queue.cancel(state, user, job_id) for job_id in job_ids]
    return JSONResponse({"cancelled": any(results)})


async def get_view(request: Request, state: State, user: UserOf, uploads: UploadsOf) -> Response:
    return await files.view(request, state, user, uploads)


async def post_upload_image(
    request: Request, state: State, user: UserOf, uploads: UploadsOf
) -> Response:
    return await files.upload(request, state, user, uploads, mask=False)


async def post_upload_mask(
    request: Request, state: State, user: UserOf, uploads: UploadsOf
) -> Response:
    return await files.upload(request, state, user, uploads, mask=True)


async def get_object_info(state: State, user: UserOf) -> Response:
    """The fleet's merged object_info (``--object-info-merge``), merged and encoded only
    when it changes."""
    body = await state.fleet_catalog.merged_body()
    return Response(body, media_type="application/json")


async def get_object_info_class(node_class: str, state: State, user: UserOf) -> Response:
    """One class of it; an unknown class is ``{}`` with 200, as ComfyUI answers."""
    info = await state.fleet_catalog.node_class(node_class)
    return JSONResponse({node_class: info} if info is not None else {})


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/object_info", get_object_info),
    ("GET", "/object_info/{node_class}", get_object_info_class),
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_entry),
    ("POST", "/history", post_history),
    ("GET", "/view", get_view),
    ("POST", "/upload/image", post_upload_image),
    ("POST", "/upload/mask", post_upload_mask),
]
JOB_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/api/jobs", get_jobs),
    ("POST", "/api/jobs/cancel", cancel_jobs),
    ("GET", "/api/jobs/{job_id}", get_job),
    ("POST", "/api/jobs/{job_id}/cancel", cancel_job),
]


def gateway_router() -> APIRouter:
    router = APIRouter(route_class=GatewayRoute, include_in_schema=False)
    for method, path, endpoint in ROUTES:
        for prefix in PREFIXES:
            router.add_api_route(prefix + path, endpoint, methods=[method])
    for method, path, endpoint in JOB_ROUTES:
        router.add_api_route(path, endpoint, methods=[method])
    return router
