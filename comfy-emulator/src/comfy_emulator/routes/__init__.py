"""HTTP and WebSocket handlers, grouped by area.

Each module exposes `ROUTES`, a list of `(method, path, handler)`. `app.py` registers ComfyUI
routes twice (`/x` and `/api/x`), the `/internal` routes once as a sub-application, and the
emulator's own `/emulator/*` control routes once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from comfy_emulator.core import Emulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]

EMULATOR = web.AppKey("emulator", Emulator)


def emulator_of(request: web.Request) -> Emulator:
    """The emulator behind this app (also reachable from the /internal sub-app)."""
    return request.config_dict[EMULATOR]


def empty_ok() -> web.Response:
    """ComfyUI's bare `web.Response(status=200)`: empty body, no Content-Type."""
    return web.Response(status=200)
