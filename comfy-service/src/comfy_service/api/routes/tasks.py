from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from comfy_service.api.answers import COMFYUI_ANSWERS, FILE_NOT_FOUND, NOT_ON_THIS_NODE
from comfy_service.deps import State
from comfy_service.errors import NotOnThisNode
from comfy_shared.api.openapi import (
    BUSY,
    INVALID_REQUEST,
    OUTPUT_EXPIRED,
    OUTPUT_FILE,
    OUTPUT_NOT_FOUND,
    RANGE_NOT_SATISFIABLE,
    STORE_UNAVAILABLE,
    TASK_FINISHED,
    TASK_PATH_ANSWERS,
    error_responses,
)
from comfy_shared.api.schemas import OutputView, TaskView
from comfy_shared.api.task_ids import TaskIdInPath
from comfy_shared.outputs.media import media_type_of
from comfy_shared.outputs.serving import (
    OutputExpired,
    output_at,
    serve_stored,
    serve_unstored_text,
)
from comfy_shared.outputs.store import attachment_disposition
from comfy_shared.outputs.texts import is_text

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get(
    "/{task_id}",
    response_model=TaskView,
    responses=error_responses(*TASK_PATH_ANSWERS, *COMFYUI_ANSWERS),
)
async def get_task(task_id: TaskIdInPath, state: State) -> TaskView:
    record = await state.store.get(task_id)
    return TaskView.from_record(record, queue_position=await state.queue_view.position(record))


@router.delete(
    "/{task_id}",
    response_model=TaskView,
    responses=error_responses(
        *TASK_PATH_ANSWERS, TASK_FINISHED, NOT_ON_THIS_NODE, BUSY, *COMFYUI_ANSWERS
    ),
)
async def cancel_task(task_id: TaskIdInPath, state: State) -> TaskView:
    """Cancel: a queued task leaves ComfyUI's queue; a running one is interrupted by its
    prompt id, so no other task is touched."""
    return TaskView.from_record(await state.endings.cancel(task_id))


@router.get(
    "/{task_id}/outputs",
    response_model=list[OutputView],
    responses=error_responses(*TASK_PATH_ANSWERS, *COMFYUI_ANSWERS),
)
async def list_outputs(task_id: TaskIdInPath, state: State) -> list[OutputView]:
    """The task's outputs: kind, media type, size, the graph node that made each, file name."""
    return TaskView.from_record(await state.store.get(task_id)).outputs


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
        FILE_NOT_FOUND,
        *COMFYUI_ANSWERS,
    )
    | {200: OUTPUT_FILE, 206: OUTPUT_FILE},
)
async def download_output(
    task_id: TaskIdInPath, index: int, state: State, request: Request
) -> Response:
    """The file from the output store (``Range``, ``ETag``); an output that was not stored
    (a failed task's, or made before the store existed) comes from ComfyUI, or, for a text,
    from the task's record."""
    output = output_at(await state.store.get(task_id), index)
    if output.sha256 is not None:
        if not await state.catalog.is_held(task_id):
            raise OutputExpired(task_id, index)
        return await serve_stored(state.outputs, task_id, index, output, request.headers)
    if is_text(output):
        return serve_unstored_text(task_id, index, output)  # ComfyUI has no file of it
    # Enter the upstream download here, so a missing file is a clean 404 before streaming;
    # the background task closes it once the response is sent (or the client went away).
    upstream = AsyncExitStack()
    stream = await upstream.enter_async_context(
        state.comfy.stream_view(output.filename, output.subfolder, output.type)
    )
    return StreamingResponse(
        stream.iter_bytes(),
        # Our own table, not ComfyUI's guess: its answer depends on its machine's mime.types.
        media_type=output.media_type,
        headers={"Content-Disposition": attachment_disposition(output.filename)},
        background=BackgroundTask(upstream.aclose),
    )


@router.get(
    "/{task_id}/files/{folder}",
    response_class=StreamingResponse,
    responses=error_responses(
        *TASK_PATH_ANSWERS, INVALID_REQUEST, NOT_ON_THIS_NODE, FILE_NOT_FOUND, *COMFYUI_ANSWERS
    )
    | {200: OUTPUT_FILE},
)
async def download_file(
    task_id: TaskIdInPath,
    folder: Literal["output", "temp"],
    filename: Annotated[str, Query(min_length=1, max_length=255, pattern=r"^[^/\\]+$")],
    state: State,
    subfolder: Annotated[str, Query(max_length=1024)] = "",
) -> Response:
    """A file ComfyUI made for a task that runs here, by ComfyUI's own name, before the
    task's end stores it: the balancer serves a ComfyUI client's ``/view`` of a file its
    ``executed`` event announced this way (and only such files: this route cannot tell one
    task's files from another's). 409 once the task is not this node's, or has ended."""
    record = await state.store.get(task_id)
    if record.node_id != state.settings.node_id or record.status.is_terminal:
        raise NotOnThisNode(task_id, record.node_id)
    upstream = AsyncExitStack()
    stream = await upstream.enter_async_context(
        state.comfy.stream_view(filename, subfolder, folder)
    )
    return StreamingResponse(
        stream.iter_bytes(),
        media_type=media_type_of(filename),
        headers={"Content-Disposition": attachment_disposition(filename)},
        background=BackgroundTask(upstream.aclose),
    )
