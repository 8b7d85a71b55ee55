"""What the service and the balancer apps have in common: the app skeleton (middlewares, error
table, shared routes), the task history routes (events, logs: both read Redis only) and the
process entry point."""

# No "from __future__ import annotations" here: the route signatures below use the local
# ``State`` alias, which FastAPI can only see if annotations are evaluated at definition time.
import math
import resource
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from importlib.metadata import version
from typing import Annotated, Protocol, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from loguru import logger
from redis.asyncio import Redis

from comfy_shared.access import Caller, visible_task
from comfy_shared.api.body_limit import BodyLimitsMiddleware
from comfy_shared.api.docs_pages import install_docs_pages
from comfy_shared.api.errors import ErrorTable, install_error_handlers
from comfy_shared.api.openapi import (
    INVALID_EVENT_ID,
    INVALID_REQUEST,
    TASK_PATH_ANSWERS,
    TOO_MANY_STREAMS,
    OpenApiRewrite,
    complete_openapi,
    error_responses,
    link_new_tasks,
)
from comfy_shared.api.request_body import describe_templates
from comfy_shared.api.request_id import RequestIdMiddleware
from comfy_shared.api.request_limits import RequestLimits
from comfy_shared.api.schemas import API_PREFIX, GenerateRequest, QueueStanding
from comfy_shared.api.sse import open_task_events
from comfy_shared.api.task_ids import TaskIdInPath
from comfy_shared.api.task_log import LogFormat, task_log_response
from comfy_shared.api.workflows import workflows_router
from comfy_shared.errors import SettingsError
from comfy_shared.logs import configure_logging
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.settings import ApiServerSettings, settings_from_argv
from comfy_shared.stream_hub import StreamHub
from comfy_shared.task_store import TaskStore
from comfy_shared.workflows import TemplateError, TemplateLibrary


class TaskReaders(Protocol):
    """What the history routes need from an app's state."""

    store: TaskStore
    redis: Redis
    keys: RedisKeys
    stream_hub: StreamHub

    @property
    def settings(self) -> ApiServerSettings: ...

    async def queue_standing(self, task: TaskRecord) -> QueueStanding | None:
        """A waiting task's queue position and ETA, where the app keeps a queue."""
        ...


def build_app(
    *,
    distribution: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    status_for: ErrorTable,
    routers: Sequence[APIRouter],
    templates: TemplateLibrary,
    settings: ApiServerSettings,
    health: APIRouter,
    authenticate: Callable[..., Awaitable[Caller]],
    credentials: OpenApiRewrite,
) -> FastAPI:
    """The app: ``routers`` under ``/api/v1``, each route behind ``authenticate`` (which may
    refuse with 401/403), as ``credentials`` documents (``require_credentials``); ``health``
    and the API description (``/openapi.json``, ``/docs``, ``/redoc`` and their files, served
    by the app itself) stay open."""
    app = FastAPI(
        title=distribution,
        version=version(distribution),
        description=description,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs_pages, without a CDN
        redoc_url=None,
    )
    install_docs_pages(app)
    app.state.templates = templates
    app.state.request_limits = RequestLimits.of(settings)
    app.state.url_fetcher = settings.url_fetcher()
    app.add_middleware(
        BodyLimitsMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout_s=settings.body_read_timeout_s,
    )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app, status_for)
    for router in (*routers, workflows_router()):
        app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(authenticate)])
    app.include_router(health)
    complete_openapi(
        app,
        models=[GenerateRequest],
        rewrites=[describe_templates(templates), link_new_tasks, credentials],
    )
    return app


_LOG_CONTENT = {
    "description": "The log: text lines, or with `format=json` a list of records.",
    "content": {
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
    },
}


def task_history_router(
    get_state: Callable[[Request], Awaitable[TaskReaders]],
    get_caller: Callable[..., Awaitable[Caller]],
) -> APIRouter:
    """``/tasks/{id}/events`` (SSE) and ``/tasks/{id}/logs``: read from Redis, so every
    process serves them the same, whoever ran the task; only to a caller who may see it."""
    router = APIRouter(prefix="/tasks", tags=["tasks"])
    State = Annotated[TaskReaders, Depends(get_state)]
    CallerOf = Annotated[Caller, Depends(get_caller)]

    @router.get(
        "/{task_id}/events",
        response_class=StreamingResponse,
        responses=error_responses(*TASK_PATH_ANSWERS, INVALID_EVENT_ID, TOO_MANY_STREAMS)
        | {200: {"content": {"text/event-stream": {}}, "description": "Task events (SSE)."}},
    )
    async def task_events(
        task_id: TaskIdInPath,
        state: State,
        caller: CallerOf,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Every state change and progress update, ending with the final state. A late client
        first gets the current state; reconnect with ``Last-Event-ID`` to get exactly the
        events you missed. While the task waits in the balancer's queue, ``queue`` events
        (no id) give its position and ETA when they change. An idle stream gets a comment
        line every ``--sse-heartbeat-s``; past ``--max-streams`` open streams: 429
        ``too_many_streams`` with Retry-After. A browser's EventSource, which cannot send
        headers, may pass its key as ``?token=``."""
        await visible_task(state.store, caller, task_id)
        stream = await open_task_events(
            state.store,
            state.stream_hub,
            state.keys,
            task_id,
            last_event_id,
            heartbeat_s=state.settings.sse_heartbeat_s,
            standing=state.queue_standing,
        )
        return stream.response()

    @router.get(
        "/{task_id}/logs",
        response_class=PlainTextResponse,
        responses=error_responses(*TASK_PATH_ANSWERS, INVALID_REQUEST) | {200: _LOG_CONTENT},
    )
    async def task_log(
        task_id: TaskIdInPath,
        state: State,
        caller: CallerOf,
        format: Annotated[LogFormat, Query()] = "text",
    ) -> Response:
        """The task's log lines from every process that handled it, and ComfyUI's own lines
        while it ran, in time order (plain text; ``?format=json`` for records)."""
        await visible_task(state.store, caller, task_id)
        return await task_log_response(state.redis, state.keys, state.store, task_id, format)

    return router


S = TypeVar("S", bound=ApiServerSettings)
OTHER_FILES = 1024
"""Open files a process needs besides its event streams (requests, Redis, logs)."""


def serve(
    settings_cls: type[S],
    create_app: Callable[[S], FastAPI],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    service: str,
) -> None:
    """The body of a ``__main__``: settings from flags and environment (exit 2 with the
    variable named on a bad one), logging, the app (exit 2 on a broken template), uvicorn."""
    try:
        settings = settings_from_argv(settings_cls, argv, prog=prog, description=description)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(
        service=service,
        node=settings.node_id,
        level=settings.log_level,
        json_lines=settings.log_json,
        logdy=settings.logdy,
        logdy_buffer_lines=settings.logdy_buffer_lines,
    )
    _allow_open_files(settings.max_streams + OTHER_FILES)
    listener = _listen(settings.host, settings.port, prog=prog)
    try:
        app = create_app(settings)
    except TemplateError as exc:
        print(f"{prog}: broken workflow template: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    config = uvicorn.Config(
        app,
        log_config=None,  # stdlib logging is routed into loguru by configure_logging
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int, *, prog: str) -> socket.socket:
    """Bind before anything starts: uvicorn would run the whole start-up (Redis, tasks
    resumed) and only then find the port taken, while whoever holds it answers our clients."""
    try:
        listener = socket.create_server((host, port), family=_family(host), backlog=2048)
    except OSError as exc:
        print(f"{prog}: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from exc
    # Answers go out at once. asyncio turns Nagle off only on sockets of protocol
    # IPPROTO_TCP, and this one (so every connection accepted from it) says 0: a second
    # request on a kept-alive connection then waited ~40 ms for the client's delayed ACK.
    # Accepted connections inherit the option from the listener.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _allow_open_files(wanted: int) -> None:
    """Every open event stream is a socket: raise the soft limit of open files (often 1024)
    to ``wanted`` where the hard limit allows, else say how many streams will fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < wanted:
        logger.warning(
            "open files limited: fewer event streams fit than --max-streams",
            open_files=raised,
            wanted=wanted,
        )
