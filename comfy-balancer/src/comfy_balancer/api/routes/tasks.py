from __future__ import annotations

import math
import re
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field
from starlette.background import BackgroundTask

from comfy_balancer.api.answers import (
    NODE_UNAVAILABLE,
    PREVIEW_IMAGE,
    PREVIEW_NOT_FOUND,
    TENANT_NOT_ALLOWED,
)
from comfy_balancer.deps import CallerOf, State
from comfy_balancer.errors import NodeUnavailable, NoPreview
from comfy_balancer.lifespan import BalancerState
from comfy_balancer.service_client import NodeUnreachable
from comfy_balancer.usage import tenants_to_report
from comfy_shared.access import NAME_PATTERN, visible_task
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
from comfy_shared.models import TASK_ID_PATTERN
from comfy_shared.outputs.catalog import release_outputs
from comfy_shared.outputs.serving import (
    OutputExpired,
    output_at,
    serve_stored,
    serve_unstored_text,
)
from comfy_shared.outputs.texts import is_text
from comfy_shared.settings import NODE_ID_PATTERN
from comfy_shared.task_listing import ListPosition, TaskFilter
from comfy_shared.task_state import TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])

PRESIGNED_EXPIRES_S = 300


class TaskPage(BaseModel):
    tasks: list[TaskView]
    next_cursor: str | None = Field(
        description="Pass it back as `cursor` (with the same filters) for the next page; "
        "null: there is none. A page may hold fewer tasks than `limit` (even none) and "
        "still have a next one: each request examines a bounded number of tasks."
    )


_ID = TASK_ID_PATTERN.removeprefix("^").removesuffix("$")
CURSOR_PATTERN: Final = rf"^([0-9]{{1,18}}|[0-9]{{1,15}}:{_ID})$"
"""``<created ms>:<task id>``: the last task a page examined. The plain offsets (at most 18
digits, any offset Redis can take) of earlier versions are still taken."""

Statuses = Annotated[
    list[TaskStatus] | None,
    Query(max_length=len(TaskStatus), description="Any of these (repeat the parameter)."),
]
Tenant = Annotated[
    str | None,
    Query(
        pattern=NAME_PATTERN,
        description="One tenant's tasks (default: yours; an admin: every tenant's). A key that "
        "is not an admin key may name only its own tenant.",
    ),
]
Workflow = Annotated[
    str | None,
    Query(
        min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Made from this workflow template.",
    ),
]  # fmt: skip
Node = Annotated[
    str | None, Query(pattern=NODE_ID_PATTERN, description="Placed last on this node.")
]
_DATE_FIRST = re.compile(r"[0-9]{4}-")


def _iso_8601(value: object) -> object:
    """Pydantic reads a number as seconds since the epoch: the filters take dates only."""
    if isinstance(value, str) and not _DATE_FIRST.match(value):
        raise ValueError("not an ISO 8601 date and time")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_8601)]
Since = Annotated[
    Moment | None,
    Query(description="Created at or after this time (ISO 8601; no offset: UTC)."),
]
Until = Annotated[
    Moment | None, Query(description="Created before this time (ISO 8601; no offset: UTC).")
]
Cursor = Annotated[
    str | None, Query(pattern=CURSOR_PATTERN, description="The `next_cursor` of the page before.")
]


@router.get(
    "",
    response_model=TaskPage,
    responses=error_responses(INVALID_REQUEST, TENANT_NOT_ALLOWED, REDIS_UNAVAILABLE),
)
async def list_tasks(
    state: State,
    caller: CallerOf,
    status: Statuses = None,
    tenant: Tenant = None,
    workflow: Workflow = None,
    node: Node = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> TaskPage:
    """Recent tasks of the caller's tenant (an admin: of every tenant, or of the one named)
    that match every filter given, newest first; pass ``next_cursor`` back as ``cursor``,
    with the same filters, for the next page.

    Each request examines at most 5,000 tasks (so a rare filter never holds Redis up): when
    they run out before ``limit`` tasks matched, the page holds those that did and a
    ``next_cursor`` to go on from. The cursor is the last task examined (its creation time
    and id), so tasks created while a client pages sort before it: no page repeats or skips
    a task. ``since`` and ``until`` skip to their window at no cost."""
    filters = TaskFilter(
        statuses=frozenset(status or ()),
        node_id=node,
        workflow=workflow,
        since_ms=_epoch_ms(since),
        until_ms=_epoch_ms(until),
    )
    listing = await state.store.list_recent(
        tenants_to_report(caller, tenant), filters, limit=limit, after=_position(cursor)
    )
    return TaskPage(
        tasks=[TaskView.from_record(record) for record in listing.records],
        next_cursor=_cursor(listing.next),
    )


def _epoch_ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return math.floor(aware.timestamp() * 1000)


def _position(cursor: str | None) -> ListPosition | int | None:
    if cursor is None or ":" not in cursor:
        return int(cursor) if cursor else None
    created_ms, task_id = cursor.split(":", 1)
    return ListPosition(int(created_ms), task_id)


def _cursor(position: ListPosition | None) -> str | None:
    return f"{position.created_ms}:{position.task_id}" if position else None


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


@router.get(
    "/{task_id}/preview",
    response_class=Response,
    responses=error_responses(*TASK_PATH_ANSWERS, PREVIEW_NOT_FOUND, REDIS_UNAVAILABLE)
    | {
        200: PREVIEW_IMAGE,
        204: {"description": "No preview: none sent yet (ask again later), or the task ended."},
    },
)
async def latest_preview(task_id: TaskIdInPath, state: State, caller: CallerOf) -> Response:
    """While a task that asked for ``previews`` runs: the newest image its sampler sent
    (ask at each ``progress`` event); 204 until the first one, and once the task ended (its
    outputs are the result). 404 ``preview_not_found`` for a task that did not ask for
    previews."""
    record = await visible_task(state.store, caller, task_id)
    if not record.previews:
        raise NoPreview(task_id)
    # An ended task answers "nothing to show" rather than an error: a watcher asking at its
    # last step races its end, and that race is no mistake of the watcher's.
    frame = (
        None
        if record.status.is_terminal
        else await state.store.latest_preview(task_id, record.attempts)
    )
    if frame is None:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    media_type = str(frame.metadata.get("image_type") or "image/jpeg")
    return Response(frame.image, media_type=media_type, headers={"Cache-Control": "no-store"})


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
