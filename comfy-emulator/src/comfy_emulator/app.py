"""`create_app(config)`: the aiohttp application of one emulator.

Like ComfyUI's PromptServer, every ComfyUI route is registered twice, as `/x` and `/api/x`
(including `/ws`), while `/internal/*` is a sub-application reachable only without the prefix.
The emulator's control routes live under `/emulator/*` only. The `/api/jobs` routes exist only
when the emulator plays ComfyUI 0.26.0 (`routes/jobs.py`).

Middlewares, in order: the loopback Host/Origin check of a default ComfyUI (403 with an empty
body when both headers are present, the host is loopback and the names differ; OPTIONS -> 200),
the "down" gate used by fault injection, and the 400 mapping of control-route arguments.
`client_max_size` comes from `max_upload_mb`, so oversized bodies get aiohttp's 413.
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from comfy_emulator.config import EmulatorConfig
from comfy_emulator.core import Emulator
from comfy_emulator.files import Folders, make_folders
from comfy_emulator.routes import EMULATOR, Route, control, files, info, jobs, prompt, ws
from comfy_emulator.routes.internal import internal_app

COMFY_ROUTES: list[Route] = [*prompt.ROUTES, *files.ROUTES, *info.ROUTES, *ws.ROUTES]
_TEMP_ROOT = web.AppKey("temp_root", str)


def create_app(config: EmulatorConfig) -> web.Application:
    """Build the application; the emulator starts with the app and stops with it."""
    folders, temp_root = _resolve_folders(config)
    emulator = Emulator(config, folders)
    middlewares = [_down_gate, control.bad_arguments]
    if config.origin_check:
        middlewares.insert(0, _origin_only)
    max_size = round(config.max_upload_mb * 1024 * 1024)
    app = web.Application(client_max_size=max_size, middlewares=middlewares)
    app[EMULATOR] = emulator
    if temp_root is not None:
        app[_TEMP_ROOT] = temp_root
    _add_routes(app, comfy_routes(config), config)
    app.on_startup.append(_start)
    # Sockets must close on shutdown: aiohttp waits for open handlers before cleanup.
    app.on_shutdown.append(_stop)
    app.on_cleanup.append(_remove_temp_root)
    return app


def _resolve_folders(config: EmulatorConfig) -> tuple[Folders, str | None]:
    temp_root = None
    data_dir = config.data_dir
    if data_dir is None:
        temp_root = tempfile.mkdtemp(prefix="comfy-emulator-")
        data_dir = Path(temp_root)
    folders = make_folders(
        str(config.input_dir or data_dir / "input"),
        str(config.output_dir or data_dir / "output"),
        str(config.temp_dir or data_dir / "temp"),
    )
    folders.ensure()
    return folders, temp_root


def comfy_routes(config: EmulatorConfig) -> list[Route]:
    """The ComfyUI routes of the configured version (the /api/jobs ones came with 0.26.0)."""
    return [*COMFY_ROUTES, *jobs.ROUTES] if config.traits.jobs_api else COMFY_ROUTES


def _add_routes(app: web.Application, routes: list[Route], config: EmulatorConfig) -> None:
    for method, path, handler in routes:
        for prefix in ("/api", ""):
            _add(app, method, prefix + path, handler)
    for method, path, handler in control.ROUTES:
        _add(app, method, path, handler)
    app.router.add_get("/", info.index)
    if config.web_extensions is not None:
        for pack in info.web_extension_packs(config.web_extensions):
            app.router.add_static(f"/extensions/{pack.name}", pack)
    app.add_subapp("/internal", internal_app())


def _add(app: web.Application, method: str, path: str, handler: Any) -> None:
    if method == "GET":
        app.router.add_get(path, handler)
    else:
        app.router.add_route(method, path, handler)


async def _start(app: web.Application) -> None:
    await app[EMULATOR].start()


async def _stop(app: web.Application) -> None:
    await app[EMULATOR].stop()


async def _remove_temp_root(app: web.Application) -> None:
    if _TEMP_ROOT in app:
        shutil.rmtree(app[_TEMP_ROOT], ignore_errors=True)


@web.middleware
async def _down_gate(request: web.Request, handler: Any) -> web.StreamResponse:
    """While "down", drop connections that still arrive (e.g. without a runner to stop)."""
    if request.config_dict[EMULATOR].is_down():
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPServiceUnavailable()
    response: web.StreamResponse = await handler(request)
    return response


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_rejected(host_header: str, origin_header: str) -> bool:
    """ComfyUI's origin_only_middleware decision for a request with both headers."""
    host_domain = host_header.lower()
    parsed = urllib.parse.urlparse(origin_header)
    origin_domain = parsed.netloc.lower()
    host_parsed = urllib.parse.urlsplit("//" + host_domain)
    loopback = _is_loopback(host_parsed.hostname)
    # A side without a port is compared by host name only.
    compare_host: str | None = host_domain if parsed.port is not None else host_parsed.hostname
    compare_origin: str | None = origin_domain if host_parsed.port is not None else parsed.hostname
    if not (loopback and compare_host and compare_origin):
        return False
    return compare_host != compare_origin


@web.middleware
async def _origin_only(request: web.Request, handler: Any) -> web.StreamResponse:
    headers = request.headers
    if (
        "Host" in headers
        and "Origin" in headers
        and origin_rejected(headers["Host"], headers["Origin"])
    ):
        return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    response: web.StreamResponse = await handler(request)
    return response
