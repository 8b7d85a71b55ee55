"""/prompt, /queue, /interrupt, /free and /history.

Bodies are read with `request.json()` and not guarded, exactly like ComfyUI: an empty or invalid
body makes the handler raise and aiohttp answers 500 "Server got itself in trouble".
`/interrupt` is the exception and treats an unparsable body as `{}`.
"""

from __future__ import annotations

import json

from aiohttp import web

from comfy_emulator.routes import Route, empty_ok, emulator_of


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(emulator_of(request).queue_info())


async def post_prompt(request: web.Request) -> web.Response:
    emulator = emulator_of(request)
    emulator.logs.log("got prompt")  # logged before parsing, as in ComfyUI
    body = await request.json()
    status, payload = emulator.submit_prompt(body)
    return web.json_response(payload, status=status)


async def get_queue(request: web.Request) -> web.Response:
    running, pending = emulator_of(request).state.queue.snapshot()
    return web.json_response({"queue_running": running, "queue_pending": pending})


async def post_queue(request: web.Request) -> web.Response:
    body = await request.json()
    queue = emulator_of(request).state.queue
    if body.get("clear"):
        queue.wipe_pending()
    for prompt_id in body.get("delete", []):
        queue.delete_pending(prompt_id)
    return empty_ok()


async def post_interrupt(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        body = {}
    emulator_of(request).interrupt(body.get("prompt_id"))
    return empty_ok()


async def post_free(request: web.Request) -> web.Response:
    body = await request.json()
    emulator_of(request).free(body.get("unload_models", False), body.get("free_memory", False))
    return empty_ok()


async def get_history(request: web.Request) -> web.Response:
    query = request.rel_url.query
    max_items = int(query["max_items"]) if "max_items" in query else None
    offset = int(query["offset"]) if "offset" in query else -1
    queue = emulator_of(request).state.queue
    return web.json_response(queue.get_history(max_items=max_items, offset=offset))


async def get_history_item(request: web.Request) -> web.Response:
    queue = emulator_of(request).state.queue
    return web.json_response(queue.get_history(prompt_id=request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    body = await request.json()
    queue = emulator_of(request).state.queue
    if body.get("clear"):
        queue.wipe_history()
    for prompt_id in body.get("delete", []):
        queue.delete_history(prompt_id)
    return empty_ok()


ROUTES: list[Route] = [
    ("GET", "/prompt", get_prompt),
    ("POST", "/prompt", post_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
]
