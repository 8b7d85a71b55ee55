"""The /internal sub-application (never mirrored under /api, as in ComfyUI).

- GET /internal/logs: a JSON *string*, every entry as "<t> - <m>" concatenated.
- GET /internal/logs/raw: {"entries": [{"t", "m"}...], "size": {"cols", "rows"}}.
- PATCH /internal/logs/subscribe {"clientId", "enabled"}: (un)subscribe a socket to `logs`
  messages; a missing key is a 500.
- GET /internal/folder_paths and /internal/files/{output|input|temp}.
"""

from __future__ import annotations

import os

from aiohttp import web

from comfy_emulator.config import MODEL_FOLDERS
from comfy_emulator.routes import empty_ok, emulator_of


async def get_logs(request: web.Request) -> web.Response:
    return web.json_response(emulator_of(request).logs.joined())


async def get_raw_logs(request: web.Request) -> web.Response:
    emulator = emulator_of(request)
    size = emulator.state.log_subscriptions.current_size()
    return web.json_response({"entries": emulator.logs.entries(), "size": size})


async def subscribe_logs(request: web.Request) -> web.Response:
    body = await request.json()
    client_id, enabled = body["clientId"], body["enabled"]
    subscriptions = emulator_of(request).state.log_subscriptions
    if enabled:
        subscriptions.sids.add(client_id)
    else:
        subscriptions.sids.discard(client_id)
    return empty_ok()


async def folder_paths(request: web.Request) -> web.Response:
    folders = emulator_of(request).services.folders
    models_root = os.path.join(os.path.dirname(folders.output), "models")
    paths = {name: [os.path.join(models_root, name)] for name in MODEL_FOLDERS}
    return web.json_response(paths)


async def list_files(request: web.Request) -> web.Response:
    kind = request.match_info["directory_type"]
    if kind not in ("output", "input", "temp"):
        return web.json_response({"error": "Invalid directory type"}, status=400)
    folder = emulator_of(request).services.folders.by_type(kind) or ""
    entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    entries.sort(key=lambda e: -e.stat().st_mtime)
    return web.json_response([e.name for e in entries])


def internal_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/logs", get_logs)
    app.router.add_get("/logs/raw", get_raw_logs)
    app.router.add_patch("/logs/subscribe", subscribe_logs)
    app.router.add_get("/folder_paths", folder_paths)
    app.router.add_get("/files/{directory_type}", list_files)
    return app
