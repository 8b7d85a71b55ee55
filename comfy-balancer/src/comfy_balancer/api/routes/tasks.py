from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from comfy_balancer.api.answers import NODE_UNAVAILABLE
from comfy_balancer.deps import CallerOf, State
from comfy_balancer.errors import NodeUnavailable
from comfy_balancer.lifespan import BalancerState
from comfy_balancer.service_client import NodeUnreachable
from comfy_shared.access import visible_task
from comfy_shared.api.openapi import (
    BUSY,
    INVALID_REQUEST,
    OUTPUT_EXPIRED,
    OUTPUT_FILE,
    OUTPUT_NOT_FOUND,
    PRESIGNED_REDIRECT,
    RANGE_NOT_SATISFIABLE,
    REDIS_UNAVAILABLE,
    STORE_UNAVAILABLE,
    TASK_FINISHED,
    TASK_PATH_ANSWERS,
    error_responses,
)
from comfy_shared.api.schemas import OutputView, TaskView
from comfy_shared.api.task_ids import TaskIdInPath
from comfy_shared.outputs.catalog import release_outputs
from comfy_shared.outputs.serving import (
    OutputExpired,
    output_at,
    serve_stored,
    serve_unstored_text,
)
from comfy_shared.outputs.texts import is_text
from comfy_shared.task_state import TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])

PRESIGNED_EXPIRES_S = 300


class TaskPage(BaseModel):
    tasks: list[TaskView]
    next_cursor: str | None


@router.get(
    "", response_model=TaskPage, responses=error_responses(INVALID_REQUEST, REDIS_UNAVAILABLE)
)
async def list_tasks(
    state: State,
    caller: CallerOf,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    # At most 18 digits: any offset Redis can take (a signed 64-bit integer) and no more.
    cursor: Annotated[str, Query(pattern=r"^[0-9]{1,18}$")] = "0",
) -> TaskPage:
    """Recent tasks of the caller's tenant (an admin: of every tenant), newest first; pass
    ``next_cursor`` back as ``cursor`` for the next page."""
    tenant = None if caller.sees_every_tenant else caller.tenant
    offset, found = int(cursor), list[TaskView]()
    while len(found) < limit:
        ids = await state.store.recent_ids(offset, limit, tenant)
        if not ids:
            return TaskPage(tasks=found, next_cursor=None)
        records = await state.store.find_many(ids)
        for task_id in ids:
            offset += 1
            record = records[task_id]
            if record is not None and status in (None, record.status):
                found.append(TaskView.from_record(record))
                if len(found) == limit:
                    break
    return TaskPage(tasks=found, next_cursor=str(offset))


@router.get("/{task_id}", response_model=TaskView, responses=error_responses(*TASK_PATH_ANSWERS))
async def get_task(task_id: TaskIdInPath, state: State, caller: CallerOf) -> TaskView:
    record = await visible_task(state.store, caller, task_id)
    position = await state.queue.position(task_id) if record.status is TaskStatus.QUEUED else None
    eta = await state.pace.expected_times(record, position)
    return TaskView.from_record(record, queue_position=position, eta=eta)


@router.delete(
    "/{task_id}",
    response_model=TaskView,
    responses=error_responses(*TASK_PATH_ANSWERS, TASK_FINISHED, NODE_UNAVAILABLE, BUSY),
)
async def cancel_task(task_id: TaskIdInPath, state: State, caller: CallerOf) -> TaskView:
    """Cancel in any state: out of the queue, or cancelled by the node it was placed on."""
    return TaskView.from_record(await state.intake.cancel(task_id, caller))


@router.get(
    "/{task_id}/outputs",
    response_model=list[OutputView],
    responses=error_responses(*TASK_PATH_ANSWERS, REDIS_UNAVAILABLE),
)
async def list_outputs(task_id: TaskIdInPath, state: State, caller: CallerOf) -> list[OutputView]:
    """The task's outputs: kind, media type, size, the graph node that made each, file name
    and download path."""
    return TaskView.from_record(await visible_task(state.store, caller, task_id)).outputs


@router.delete(
    "/{task_id}/outputs",
    status_code=204,
    response_class=Response,
    responses=error_responses(*TASK_PATH_ANSWERS, STORE_UNAVAILABLE, REDIS_UNAVAILABLE),
)
async def delete_outputs(task_id: TaskIdInPath, state: State, caller: CallerOf) -> Response:
    """Delete the task's stored outputs now, before their retention ends: their downloads
    answer 410 from then on. Bytes another task made too stay, for that task."""
    await visible_task(state.store, caller, task_id)
    await release_outputs(state.catalog, state.outputs, task_id)
    return Response(status_code=204)


@router.get(
    "/{task_id}/outputs/{index}",
    response_class=StreamingResponse,
    responses=error_responses(
        *TASK_PATH_ANSWERS,
        INVALID_REQUEST,
        OUTPUT_NOT_FOUND,
        OUTPUT_EXPIRED,
        RANGE_NOT_SATISFIABLE,
        STORE_UNAVAILABLE,
        NODE_UNAVAILABLE,
    )
    | {200: OUTPUT_FILE, 206: OUTPUT_FILE, 307: PRESIGNED_REDIRECT},
)
async def download_output(
    task_id: TaskIdInPath, index: int, state: State, caller: CallerOf, request: Request
) -> Response:
    """The file from the output store (``Range``, ``ETag``): the node that made it need not
    be alive. With ``--outputs-redirect`` and a store that presigns (S3), a redirect to it.
    A text that was not stored (a failed task's) comes from the task's record."""
    record = await visible_task(state.store, caller, task_id)
    output = output_at(record, index)
    if output.sha256 is None and is_text(output):
        return serve_unstored_text(task_id, index, output)  # in the record: no node needed
    if output.sha256 is None:
        return await _from_node(state, task_id, index, record.node_id)
    if not await state.catalog.is_held(task_id):
        raise OutputExpired(task_id, index)
    if state.settings.outputs_redirect:
        url = await state.outputs.presigned_url(
            output.sha256,
            filename=output.filename,
            media_type=output.media_type,
            expires_s=PRESIGNED_EXPIRES_S,
        )
        if url is not None:
            return RedirectResponse(url, status_code=307)
    return await serve_stored(state.outputs, task_id, index, output, request.headers)


async def _from_node(
    state: BalancerState, task_id: str, index: int, node_id: str | None
) -> Response:
    """An output made before the store existed: proxied from the node that holds it."""
    node = await state.registry.find(node_id or "")
    if node is None or node.url is None:
        raise NodeUnavailable(node_id, "it holds the file and publishes no health")
    upstream = AsyncExitStack()
    try:
        response = await upstream.enter_async_context(
            state.nodes_client.output(node.url, task_id, index)
        )
    except NodeUnreachable as exc:
        raise NodeUnavailable(node_id, str(exc)) from exc
    if response.status_code != 200:
        await upstream.aclose()
        raise NodeUnavailable(node_id, f"it answered {response.status_code}")
    headers = {
        name: value
        for name, value in response.headers.items()
        if name.lower() in ("content-disposition", "content-length")
    }
    return StreamingResponse(
        response.aiter_bytes(),
        media_type=response.headers.get("content-type"),
        headers=headers,
        background=BackgroundTask(upstream.aclose),
    )
