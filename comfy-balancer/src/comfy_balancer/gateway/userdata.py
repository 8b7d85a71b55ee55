"""ComfyUI's user routes over each tenant's state in Redis (:mod:`.userdata_store`): users,
settings, userdata files. Shapes and statuses as core's ``app/user_manager.py`` and
``app/app_settings.py`` answer them; the user is the caller's tenant (the key, or the browser
session), never a ``Comfy-User`` header.

- ``GET /users``: ``{"storage": "server", "migrated": true}``: one user per sign-in, and
  nothing in the browser's own storage to migrate. ``POST /users`` is refused (400
  ``{"error"}``): users are API keys, made by an administrator.
- ``GET /settings`` (all, an object), ``GET /settings/{id}`` (the value, ``null`` if unset),
  ``POST /settings`` (an object merged in), ``POST /settings/{id}`` (any JSON value). The
  body is JSON whatever its Content-Type (the frontend sends none).
- ``GET /userdata?dir=&recurse=&full_info=&split=``: the files under ``dir``: relative paths,
  ``[path, *parts]`` with ``split``, or ``{path, size, modified, created}`` with
  ``full_info``. A folder nothing lies under lists as ``[]`` (the frontend reads core's 404
  for a missing folder the same way).
- ``GET/POST/DELETE /userdata/{file}``, ``POST /userdata/{file}/move/{dest}``: ``{file}`` is
  one path segment that may hold an encoded ``/`` (``workflows%2Fa.json``), so these routes
  read the request's raw path, not the decoded one. POST takes the raw body;
  ``overwrite=false`` on an existing file is 409; DELETE answers 204.

Every route exists as ``/x`` and ``/api/x``.
"""

from __future__ import annotations

import mimetypes
from typing import Any, Final
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from comfy_balancer.deps import CallerOf, State
from comfy_balancer.gateway.userdata_store import (
    InvalidSettings,
    InvalidUserPath,
    UserdataLimits,
    UserFile,
    UserFileMissing,
    UserFiles,
    UserSettings,
    user_directory,
    user_path,
)
from comfy_balancer.lifespan import BalancerState
from comfy_shared.access import Caller
from comfy_shared.api.strict_json import parse_strict_json

USER_CSS: Final = "user.css"
_INERT_TYPES: Final = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/javascript",
        "application/javascript",
        "application/xml",
        "text/xml",
    }
)
"""Media types a browser would run or render with scripts: such a file is served as bytes."""

router = APIRouter(include_in_schema=False)


@router.get("/users")
async def users(_: CallerOf) -> dict[str, Any]:
    return {"storage": "server", "migrated": True}


@router.post("/users")
async def new_user(_: CallerOf) -> JSONResponse:
    return JSONResponse(
        {"error": "users are API keys on this server: ask an administrator for one"},
        status_code=400,
    )


@router.get("/settings")
async def all_settings(caller: CallerOf, state: State) -> dict[str, Any]:
    return await _settings(state, caller).all()


@router.post("/settings")
async def store_settings(request: Request, caller: CallerOf, state: State) -> Response:
    values = parse_strict_json(await request.body())
    if not isinstance(values, dict):
        raise InvalidSettings("the settings are a JSON object: setting id -> value")
    await _settings(state, caller).merge(values)
    return Response(status_code=200)


@router.get("/settings/{rest:path}")
async def one_setting(request: Request, caller: CallerOf, state: State) -> JSONResponse:
    setting_id = _single_segment(request, "/settings/")
    return JSONResponse(await _settings(state, caller).get(setting_id))


@router.post("/settings/{rest:path}")
async def store_setting(request: Request, caller: CallerOf, state: State) -> Response:
    setting_id = _single_segment(request, "/settings/")
    value = parse_strict_json(await request.body())
    await _settings(state, caller).merge({setting_id: value})
    return Response(status_code=200)


@router.get("/userdata")
async def list_userdata(request: Request, caller: CallerOf, state: State) -> Response:
    query = request.query_params
    if not query.get("dir"):
        return PlainTextResponse("Directory not provided", status_code=400)
    directory = user_directory(query["dir"])
    found = await _files(state, caller).listing(directory, recurse=_flag(query.get("recurse")))
    prefix = f"{directory}/"
    if _flag(query.get("full_info")):
        return JSONResponse([file.info(relative_to=prefix) for file in found])
    relative = [file.path[len(prefix) :] for file in found]
    if _flag(query.get("split")):
        return JSONResponse([[path, *path.split("/")] for path in relative])
    return JSONResponse(relative)


@router.get("/userdata/{rest:path}")
async def read_userdata(request: Request, caller: CallerOf, state: State) -> Response:
    path = user_path(_single_segment(request, "/userdata/"))
    file, content = await _files(state, caller).read(path)
    return _file_response(file, content)


@router.post("/userdata/{rest:path}")
async def write_userdata(request: Request, caller: CallerOf, state: State) -> Response:
    segments = _segments(request, "/userdata/")
    query = request.query_params
    overwrite = query.get("overwrite", "true") != "false"
    files = _files(state, caller)
    if len(segments) == 3 and segments[1] == "move":
        source, dest = user_path(segments[0]), user_path(segments[2])
        moved = await files.move(source, dest, overwrite=overwrite)
        return _written(moved, full_info=_flag(query.get("full_info")))
    path = user_path(_only(segments))
    written = await files.write(path, await request.body(), overwrite=overwrite)
    return _written(written, full_info=_flag(query.get("full_info")))


@router.delete("/userdata/{rest:path}")
async def delete_userdata(request: Request, caller: CallerOf, state: State) -> Response:
    path = user_path(_single_segment(request, "/userdata/"))
    await _files(state, caller).delete(path)
    return Response(status_code=204)


def _settings(state: BalancerState, caller: Caller) -> UserSettings:
    return UserSettings(state.redis, state.keys, caller.tenant)


def _files(state: BalancerState, caller: Caller) -> UserFiles:
    settings = state.settings
    limits = UserdataLimits(
        max_file_bytes=settings.ui_userdata_max_file_bytes,
        max_bytes=settings.ui_userdata_max_bytes,
        max_files=settings.ui_userdata_max_files,
    )
    return UserFiles(state.redis, state.keys, caller.tenant, limits)


def _flag(value: str | None) -> bool:
    return (value or "").lower() == "true"


def _segments(request: Request, after: str) -> list[str]:
    """The path's segments after ``after``, each percent-decoded on its own: a decoded path
    would split ``workflows%2Fa.json`` in two."""
    raw: bytes | None = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    tail = path.split(after, 1)[1] if after in path else ""
    try:
        return [unquote(segment, errors="strict") for segment in tail.split("/")]
    except UnicodeDecodeError as exc:
        raise InvalidUserPath("the path is not UTF-8") from exc


def _single_segment(request: Request, after: str) -> str:
    return _only(_segments(request, after))


def _only(segments: list[str]) -> str:
    if len(segments) != 1:
        raise UserFileMissing("no such route")  # as core's router: no match, 404
    return segments[0]


def _written(file: UserFile, *, full_info: bool) -> JSONResponse:
    return JSONResponse(file.info() if full_info else file.path)


def _file_response(file: UserFile, content: bytes) -> Response:
    """As core serves a user's file: never rendered inline where it could run script in this
    origin (an attachment, inert media types, nosniff), except the user's own stylesheet."""
    if file.path == USER_CSS:
        media_type, disposition = "text/css", "inline"
    else:
        media_type = mimetypes.guess_type(file.path)[0] or "application/octet-stream"
        if media_type in _INERT_TYPES:
            media_type = "application/octet-stream"
        disposition = "attachment"
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": disposition,
        "Cache-Control": "no-cache",
    }
    return Response(content, media_type=media_type, headers=headers)
