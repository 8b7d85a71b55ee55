"""Emulator-only control API under /emulator/* (real ComfyUI has none of this).

All bodies are optional JSON objects; every answer is JSON; bad arguments give 400
`{"error": "..."}`.

- GET  /emulator/stats: executions per prompt_id, node runs per class, outcomes, restarts,
  `model_loads` (model file -> loads paid), `load_seconds` (seconds paid for them), `resident`
  (model files in the emulated VRAM, least recently used first), armed faults, timing and
  queue sizes.
- POST /emulator/stats/reset: zero the counters (the resident models stay).
- GET/POST /emulator/timing `{"speed", "step_time", "node_time": {class: seconds},
  "load_scale"}`.
- POST /emulator/speed `{"speed": 2.0}`: 2.0 = twice as fast.
- POST /emulator/fail-next `{"count": 1, "exception_type", "message"}`: the next N prompts fail
  in their first node (default: CUDA out of memory, `torch.OutOfMemoryError`).
- POST /emulator/hang-next `{"count": 1}`: the next N prompts hang in their first node until
  interrupted or released.
- POST /emulator/release: let hung prompts continue.
- POST /emulator/reset-faults: disarm fail/hang and release hung prompts.
- POST /emulator/drop-websockets `{"mode": "close" | "abort"}`: close (1001) or cut every socket.
- POST /emulator/restart: lose queue, running prompt, history, sockets, cache and resident
  models (the counters of /emulator/stats stay).
- POST /emulator/down `{"seconds": 2.0, "keep_state": false}`: refuse connections for a while;
  without keep_state it is also a restart (a crash and reboot).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from comfy_emulator.faults import OOM_MESSAGE, OOM_TYPE, FailSpec
from comfy_emulator.routes import Route, emulator_of


class BadArgument(Exception):
    pass


async def _body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadArgument(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadArgument("the body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, default: float, minimum: float = 0.0) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise BadArgument(f"{key} must be a number >= {minimum}")
    return float(value)


def _count(body: dict[str, Any]) -> int:
    value = body.get("count", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadArgument("count must be a non-negative integer")
    return value


@web.middleware
async def bad_arguments(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except BadArgument as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return response


async def stats(request: web.Request) -> web.Response:
    emulator = emulator_of(request)
    services = emulator.services
    queue = emulator.state.queue
    return web.json_response(
        {
            **services.stats.snapshot(),
            "faults": services.faults.snapshot(),
            "timing": services.timing.snapshot(),
            "queue": {"running": len(queue.running), "pending": len(queue.pending)},
            "resident": emulator.state.models.files(),
        }
    )


async def reset_stats(request: web.Request) -> web.Response:
    emulator_of(request).services.stats.reset()
    return web.json_response({"ok": True})


async def get_timing(request: web.Request) -> web.Response:
    return web.json_response(emulator_of(request).services.timing.snapshot())


async def set_timing(request: web.Request) -> web.Response:
    body = await _body(request)
    timing = emulator_of(request).services.timing
    speed = _number(body, "speed", timing.speed) if "speed" in body else timing.speed
    if speed <= 0:
        raise BadArgument("speed must be > 0")
    step_time = _number(body, "step_time", timing.step_time)
    load_scale = _number(body, "load_scale", timing.load_scale)
    node_time = body.get("node_time", {})
    if not isinstance(node_time, dict):
        raise BadArgument("node_time must be an object of class_type -> seconds")
    timing.speed, timing.step_time, timing.load_scale = speed, step_time, load_scale
    timing.node_time.update({str(k): _number(node_time, k, 0.0) for k in node_time})
    return web.json_response(timing.snapshot())


async def set_speed(request: web.Request) -> web.Response:
    body = await _body(request)
    speed = _number(body, "speed", 1.0)
    if speed <= 0:
        raise BadArgument("speed must be > 0")
    emulator_of(request).services.timing.speed = speed
    return web.json_response({"speed": speed})


async def fail_next(request: web.Request) -> web.Response:
    body = await _body(request)
    spec = FailSpec(
        str(body.get("exception_type", OOM_TYPE)), str(body.get("message", OOM_MESSAGE))
    )
    faults = emulator_of(request).services.faults
    faults.arm_fail(_count(body), spec)
    return web.json_response(faults.snapshot())


async def hang_next(request: web.Request) -> web.Response:
    body = await _body(request)
    faults = emulator_of(request).services.faults
    faults.arm_hang(_count(body))
    return web.json_response(faults.snapshot())


async def release(request: web.Request) -> web.Response:
    return web.json_response({"released": emulator_of(request).services.faults.release_all()})


async def reset_faults(request: web.Request) -> web.Response:
    faults = emulator_of(request).services.faults
    faults.clear()
    return web.json_response(faults.snapshot())


async def drop_websockets(request: web.Request) -> web.Response:
    body = await _body(request)
    mode = body.get("mode", "close")
    if mode not in ("close", "abort"):
        raise BadArgument("mode must be 'close' or 'abort'")
    hub = emulator_of(request).state.hub
    count = len(hub.connections)
    if mode == "abort":
        hub.abort_all()
    else:
        await hub.close_all()
    return web.json_response({"dropped": count})


async def restart(request: web.Request) -> web.Response:
    emulator = emulator_of(request)
    await emulator.restart()
    return web.json_response({"restarts": emulator.services.stats.restarts})


async def down(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    seconds = _number(body, "seconds", 2.0)
    keep_state = bool(body.get("keep_state", False))
    response = web.json_response({"down_for": seconds, "keep_state": keep_state})
    # Answer first: going down closes every connection, this one included.
    await response.prepare(request)
    await response.write_eof()
    await emulator_of(request).go_down(seconds, keep_state)
    return response


ROUTES: list[Route] = [
    ("GET", "/emulator/stats", stats),
    ("POST", "/emulator/stats/reset", reset_stats),
    ("GET", "/emulator/timing", get_timing),
    ("POST", "/emulator/timing", set_timing),
    ("POST", "/emulator/speed", set_speed),
    ("POST", "/emulator/fail-next", fail_next),
    ("POST", "/emulator/hang-next", hang_next),
    ("POST", "/emulator/release", release),
    ("POST", "/emulator/reset-faults", reset_faults),
    ("POST", "/emulator/drop-websockets", drop_websockets),
    ("POST", "/emulator/restart", restart),
    ("POST", "/emulator/down", down),
]
