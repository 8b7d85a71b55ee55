"""Conformance with recordings of a real ComfyUI 0.8.0 (comfy_testkit.captures).

HTTP: every recorded exchange is replayed in order against one emulator, recreating the same
state (uploads, slow prompts, interrupts, queue deletes); status, Content-Type and the JSON
*structure* (keys recursively and value types) must match. Ids, timestamps, numbers and hashes
may differ. Binary answers must have the same content type and decode as PNG.

WebSocket: every recorded scenario is re-run; the sequence of message types must match, with the
same data keys and the same deterministic details (queue counts, node ids, node states).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from PIL import Image

from comfy_emulator.testing import EmulatorClient, WsRecorder, is_done
from comfy_testkit.captures import capture_names, load_capture, load_ws_transcripts

SLOW_BLUR_S = 0.5  # each ImageBlur of the "slow" captures; interrupts land within one blur


# ---- structural comparison -----------------------------------------------------------------


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def _homogeneous(items: list[Any]) -> bool:
    shapes = [json.dumps(_shape(i), sort_keys=True) for i in items]
    return len(set(shapes)) <= 1


def structure_diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Differences in keys and value types; lists of like items may differ in length."""
    if type(expected) is not type(actual):
        return [f"{path}: {type(expected).__name__} != {type(actual).__name__}"]
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            return [f"{path}: keys {sorted(expected)} != {sorted(actual)}"]
        return [d for k in expected for d in structure_diff(expected[k], actual[k], f"{path}.{k}")]
    if isinstance(expected, list):
        return _list_diff(expected, actual, path)
    return []


def _list_diff(expected: list[Any], actual: list[Any], path: str) -> list[str]:
    if len(expected) == len(actual):
        pairs = zip(expected, actual, strict=True)
        return [d for n, (e, a) in enumerate(pairs) for d in structure_diff(e, a, f"{path}[{n}]")]
    if not (_homogeneous(expected) and _homogeneous(actual)):
        return [f"{path}: length {len(expected)} != {len(actual)}"]
    if expected and actual:
        return structure_diff(expected[0], actual[0], f"{path}[*]")
    return []


def test_structure_diff_catches_differences() -> None:
    assert structure_diff({"a": [1, "x"]}, {"a": [2, "y"]}) == []
    assert structure_diff({"a": 1}, {"a": 1.0}) == ["$.a: int != float"]
    assert structure_diff({"a": 1}, {"b": 1}) != []
    assert structure_diff(["s"], ["a", "b"]) == []  # like items, other length
    assert structure_diff([1, "x"], [1]) != []  # positional lists must match in length
    assert structure_diff(None, 0) != []


# ---- HTTP replay ---------------------------------------------------------------------------


class Replay:
    """Replays captures in order, translating recorded prompt ids to the emulator's."""

    def __init__(self, client: EmulatorClient) -> None:
        self.client = client
        self.ids: dict[str, str] = {}
        self.failures: list[str] = []

    def translate(self, text: str) -> str:
        for recorded, actual in self.ids.items():
            text = text.replace(recorded, actual)
        return text

    async def run(self, name: str) -> None:
        capture = load_capture(name)
        await PRECONDITIONS.get(name, _nothing)(self)
        status, headers, body = await self._send(capture["request"])
        expected = capture["response"]
        self._remember_ids(expected["body"], body)
        self._check(name, expected, status, headers, body)

    async def _send(self, request: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        url = self.client.base_url + self.translate(request["path"])
        kwargs: dict[str, Any] = {}
        if "multipart" in request:
            kwargs["data"] = _form(request["multipart"])
        elif "body" in request:
            kwargs["data"] = self.translate(json.dumps(request["body"]))
            kwargs["headers"] = request.get("headers", {})
        async with self.client.session.request(request["method"], url, **kwargs) as response:
            raw = await response.read()
            return response.status, dict(response.headers), _decode(response.content_type, raw)

    def _remember_ids(self, expected: Any, actual: Any) -> None:
        if isinstance(expected, dict) and isinstance(actual, dict) and "prompt_id" in expected:
            self.ids[expected["prompt_id"]] = actual["prompt_id"]

    def _check(
        self, name: str, expected: dict[str, Any], status: int, headers: dict[str, str], body: Any
    ) -> None:
        problems = []
        if status != expected["status"]:
            problems.append(f"status {expected['status']} != {status}")
        recorded_type = expected["headers"].get("Content-Type")
        if recorded_type != headers.get("Content-Type"):
            problems.append(f"content type {recorded_type} != {headers.get('Content-Type')}")
        problems += _body_problems(expected["body"], body, self.translate)
        self.failures += [f"{name}: {p}" for p in problems]


def _form(fields: dict[str, Any]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        if isinstance(value, dict):
            data = base64.b64decode(value["base64"])
            form.add_field(
                key, data, filename=value["filename"], content_type=value["content_type"]
            )
        else:
            form.add_field(key, value)
    return form


def _decode(content_type: str, raw: bytes) -> Any:
    if content_type == "application/json":
        return json.loads(raw)
    if content_type.startswith("image/"):
        return {"_binary": True, "content_type": content_type, "bytes": raw}
    return raw.decode()


def _body_problems(expected: Any, actual: Any, translate: Callable[[str], str]) -> list[str]:
    if isinstance(expected, dict) and expected.get("_binary"):
        if not isinstance(actual, dict) or actual.get("content_type") != expected["content_type"]:
            return ["binary content type differs"]
        Image.open(io.BytesIO(actual["bytes"])).verify()  # raises unless a valid image
        return []
    return structure_diff(json.loads(translate(json.dumps(expected))), actual)


async def _nothing(replay: Replay) -> None:
    return None


def _wait_history(capture: str) -> Callable[[Replay], Awaitable[None]]:
    async def wait(replay: Replay) -> None:
        recorded = load_capture(capture)["request"]["path"].rsplit("/", 1)[1]
        await replay.client.wait_for_history(replay.ids[recorded])

    return wait


def _wait_running(post_capture: str) -> Callable[[Replay], Awaitable[None]]:
    async def wait(replay: Replay) -> None:
        recorded = load_capture(post_capture)["response"]["body"]["prompt_id"]
        await replay.client.wait_running(replay.ids[recorded])

    return wait


async def _wait_idle(replay: Replay) -> None:
    await replay.client.wait_idle()


PRECONDITIONS: dict[str, Callable[[Replay], Awaitable[None]]] = {
    "10-get-history-ok": _wait_history("10-get-history-ok"),
    "14-get-history-cached-repeat": _wait_history("14-get-history-cached-repeat"),
    "25-get-history-execution-error": _wait_history("25-get-history-execution-error"),
    "27-get-queue-running": _wait_running("26-post-prompt-ok-slow"),
    "29-get-history-interrupted": _wait_history("29-get-history-interrupted"),
    "33-get-queue-running-and-pending": _wait_running("30-post-prompt-queue-a-slow"),
    "40-get-history-queue-c": _wait_history("40-get-history-queue-c"),
    "42-post-interrupt-global-empty-json": _wait_running("41-post-prompt-slow-2"),
    "43-get-history-interrupted-global": _wait_history("43-get-history-interrupted-global"),
    "44-post-interrupt-idle": _wait_idle,
    "51-get-history-loadimage": _wait_history("51-get-history-loadimage"),
    "53-get-history-max-items-2": _wait_idle,
    "54-get-queue-idle-end": _wait_idle,
}


async def test_replay_every_capture(start: Any) -> None:
    running = await start(device="cpu", node_time={"ImageBlur": SLOW_BLUR_S})
    names = capture_names()
    assert len(names) == 56
    async with EmulatorClient(running.url) as client:
        replay = Replay(client)
        for name in names:
            await replay.run(name)
    assert replay.failures == []


# ---- WebSocket transcripts -----------------------------------------------------------------


def signature(message: dict[str, Any]) -> tuple[Any, ...]:
    """Type, data keys and the deterministic details of one message."""
    kind, data = message["type"], message["data"]
    details: Any = None
    if kind == "status":
        details = (data["status"]["exec_info"]["queue_remaining"], "sid" in data)
    elif kind in ("executing", "executed"):
        details = data["node"]
    elif kind == "execution_cached":
        details = tuple(sorted(data["nodes"]))
    elif kind == "progress_state":
        details = tuple(sorted((n, s["state"], tuple(sorted(s))) for n, s in data["nodes"].items()))
    elif kind in ("execution_interrupted", "execution_error"):
        details = data["node_id"]
    return kind, tuple(sorted(data)), details


def expected_signatures(scenario: str) -> list[tuple[Any, ...]]:
    return [signature(m) for m in load_ws_transcripts()[scenario]["messages"]]


def _workflow(capture: str) -> dict[str, Any]:
    workflow: dict[str, Any] = load_capture(capture)["request"]["body"]["prompt"]
    return workflow


async def _greeted(ws: WsRecorder) -> None:
    await ws.wait_for(lambda m: m["type"] == "status" and "sid" in m["data"])


def _executing(node: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "executing" and m["data"].get("node") == node


async def _run_scenario(
    client: EmulatorClient, scenario: str, workflow: dict[str, Any]
) -> list[tuple[Any, ...]]:
    client_id = load_ws_transcripts()[scenario]["client_id"]
    async with client.websocket(client_id) as ws:
        await _greeted(ws)
        response = await client.post_prompt(workflow, client_id=client_id)
        await ws.wait_done(response["prompt_id"])
        return [signature(m) for m in ws.messages]


async def test_ws_success_and_all_cached(start: Any) -> None:
    async with EmulatorClient((await start()).url) as client:
        workflow = load_ws_transcripts()["success"]["workflow"]
        assert await _run_scenario(client, "success", workflow) == expected_signatures("success")
        cached = await _run_scenario(client, "success_all_cached", workflow)
        assert cached == expected_signatures("success_all_cached")


async def test_ws_execution_error(start: Any) -> None:
    async with EmulatorClient((await start()).url) as client:
        workflow = load_ws_transcripts()["execution_error"]["workflow"]
        got = await _run_scenario(client, "execution_error", workflow)
        assert got == expected_signatures("execution_error")


async def test_ws_success_loadimage(start: Any) -> None:
    async with EmulatorClient((await start()).url) as client:
        upload = load_capture("45-post-upload-image")["request"]["multipart"]
        async with client.session.post(client.base_url + "/upload/image", data=_form(upload)) as r:
            assert r.status == 200
        workflow = load_ws_transcripts()["success_loadimage"]["workflow"]
        got = await _run_scenario(client, "success_loadimage", workflow)
        assert got == expected_signatures("success_loadimage")


async def test_ws_interrupted_with_prompt_id(start: Any) -> None:
    running = await start(node_time={"ImageBlur": 0.5})
    transcript = load_ws_transcripts()["interrupted"]
    async with (
        EmulatorClient(running.url) as client,
        client.websocket(transcript["client_id"]) as ws,
    ):
        await _greeted(ws)
        prompt_id = (
            await client.post_prompt(transcript["workflow"], client_id=transcript["client_id"])
        )["prompt_id"]
        await ws.wait_for(_executing("11"))  # the interrupt lands while "11" runs
        await client.post_json("/interrupt", {"prompt_id": prompt_id})
        await ws.wait_done(prompt_id)
        assert [signature(m) for m in ws.messages] == expected_signatures("interrupted")


async def test_ws_interrupted_global(start: Any) -> None:
    running = await start(node_time={"ImageBlur": 0.5})
    client_id = load_ws_transcripts()["interrupted_global"]["client_id"]
    async with EmulatorClient(running.url) as client, client.websocket(client_id) as ws:
        await _greeted(ws)
        response = await client.post_prompt(_workflow("41-post-prompt-slow-2"), client_id=client_id)
        await ws.wait_for(_executing("10"))
        await client.post_json("/interrupt", {})
        await ws.wait_done(response["prompt_id"])
        assert [signature(m) for m in ws.messages] == expected_signatures("interrupted_global")


async def test_ws_queue_delete_and_global_interrupt(start: Any) -> None:
    running = await start(node_time={"ImageBlur": 0.5})
    client_id = load_ws_transcripts()["queue_delete_and_global_interrupt"]["client_id"]
    async with EmulatorClient(running.url) as client, client.websocket(client_id) as ws:
        await _greeted(ws)
        await client.post_prompt(_workflow("30-post-prompt-queue-a-slow"), client_id=client_id)
        await ws.wait_for(_executing("10"))
        b = await client.post_prompt(_workflow("31-post-prompt-queue-b"), client_id=client_id)
        c = await client.post_prompt(_workflow("32-post-prompt-queue-c"), client_id=client_id)
        await client.post_json("/queue", {"delete": [b["prompt_id"]]})
        await client.post_json("/interrupt", {"prompt_id": c["prompt_id"]})  # pending: a no-op
        await client.post_json("/interrupt")
        await ws.wait_for(lambda m: is_done(m, c["prompt_id"]))
        got = [signature(m) for m in ws.messages]
        assert got == expected_signatures("queue_delete_and_global_interrupt")
