from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from comfy_service.deps import State
from comfy_service.errors import OutputNotFound
from comfy_shared.api.schemas import ErrorBody, TaskView
from comfy_shared.api.sse import SSE_HEADERS, open_task_events
from comfy_shared.api.task_log import LogFormat, task_log_response

router = APIRouter(prefix="/tasks", tags=["tasks"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown task id."}
}


@router.get("/{task_id}", response_model=TaskView, responses=_NOT_FOUND)
async def get_task(task_id: str, state: State) -> TaskView:
    record = await state.store.get(task_id)
    return TaskView.from_record(record, queue_position=await state.runner.queue_position(record))


@router.delete(
    "/{task_id}",
    response_model=TaskView,
    responses=_NOT_FOUND
    | {409: {"model": ErrorBody, "description": "The task already ended (`status` says how)."}},
)
async def cancel_task(task_id: str, state: State) -> TaskView:
    """Cancel: a queued task leaves ComfyUI's queue; a running one is interrupted by its
    prompt id, so no other task is touched."""
    return TaskView.from_record(await state.runner.cancel(task_id))


@router.get(
    "/{task_id}/outputs/{index}",
    response_class=StreamingResponse,
    responses=_NOT_FOUND | {200: {"content": {"image/png": {}}, "description": "The file."}},
)
async def download_output(task_id: str, index: int, state: State) -> StreamingResponse:
    record = await state.store.get(task_id)
    if not 0 <= index < len(record.outputs):
        raise OutputNotFound(task_id, index)
    output = record.outputs[index]
    # Enter the upstream download here, so a missing file is a clean 404 before streaming;
    # the background task closes it once the response is sent (or the client went away).
    upstream = AsyncExitStack()
    stream = await upstream.enter_async_context(
        state.comfy.stream_view(output.filename, output.subfolder, output.type)
    )
    return StreamingResponse(
        stream.iter_bytes(),
        media_type=stream.content_type,
        headers={"Content-Disposition": f'attachment; filename="{output.filename}"'},
        background=BackgroundTask(upstream.aclose),
    )


@router.get(
    "/{task_id}/logs",
    response_class=PlainTextResponse,
    responses=_NOT_FOUND
    | {200: {"content": {"text/plain": {}, "application/json": {}}, "description": "Timeline."}},
)
async def task_log(
    task_id: str, state: State, format: Annotated[LogFormat, Query()] = "text"
) -> Response:
    """The task's log lines from every process that handled it, and ComfyUI's own lines while
    it ran, in time order (plain text; ``?format=json`` for records)."""
    return await task_log_response(state.redis, state.keys, state.store, task_id, format)


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses=_NOT_FOUND
    | {200: {"content": {"text/event-stream": {}}, "description": "Task events (SSE)."}},
)
async def task_events(
    task_id: str,
    state: State,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every state change and progress update, ending with the final state. Reconnect with
    ``Last-Event-ID`` to get exactly the events you missed."""
    frames = await open_task_events(state.store, task_id, last_event_id)
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)
