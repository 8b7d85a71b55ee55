"""Request bodies a hostile (or careless) client sends, and what every API must answer to each:
the same table runs against a service and against the balancer."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from comfy_shared.api.openapi import documented_codes, response_codes
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished

SEED_MAX = 2**64 - 1
"""ComfyUI's largest seed: a valid request must keep getting through."""


@dataclass(frozen=True)
class Poison:
    name: str
    body: str
    """The JSON text, written out: a client library would refuse to encode most of these."""
    status: int
    code: str
    path: str | None = None
    """The JSON path the error must name, when it names one."""


def _graph_with(value: str) -> str:
    """A valid two-node graph whose EmptyImage width is ``value``, as JSON text."""
    graph = graphs.solid_image("poison")
    graph["1"]["inputs"]["width"] = "@"
    return json.dumps(graph).replace('"@"', value)


def _template_with(field: str, value: str) -> str:
    return f'{{"workflow": "txt2img-sdxl", "params": {{"prompt": "x", "{field}": {value}}}}}'


def _nested(depth: int) -> str:
    return '{"workflow": "demo", "client": {"deep": ' + "[" * depth + "]" * depth + "}}"


TEXT_POISONS = [
    Poison("NaN in params", _template_with("cfg", "NaN"), 422, "invalid_number", "$.params.cfg"),
    Poison(
        "1e400 overflows", _template_with("cfg", "1e400"), 422, "invalid_number", "$.params.cfg"
    ),
    Poison("-1e400", _template_with("cfg", "-1e400"), 422, "invalid_number", "$.params.cfg"),
    Poison(
        "10**400", _template_with("seed", "1" + "0" * 400), 422, "invalid_number", "$.params.seed"
    ),
    Poison("2**64", _template_with("seed", str(2**64)), 422, "invalid_number", "$.params.seed"),
    Poison(
        "-(2**63) - 1",
        _template_with("seed", str(-(2**63) - 1)),
        422,
        "invalid_number",
        "$.params.seed",
    ),
    Poison(
        "5000 digits, too long for int()",
        _template_with("seed", "9" * 5000),
        422,
        "invalid_number",
        "$.params.seed",
    ),
    Poison(
        "Infinity in a graph input",
        f'{{"prompt": {_graph_with("Infinity")}}}',
        422,
        "invalid_number",
        '$.prompt["1"].inputs.width',
    ),
    Poison(
        "-Infinity in client metadata",
        '{"workflow": "demo", "client": {"tags": [1, -Infinity]}}',
        422,
        "invalid_number",
        "$.client.tags[1]",
    ),
    Poison(
        "lone surrogate",
        '{"workflow": "demo", "client": {"note": "\\ud800"}}',
        422,
        "invalid_string",
        "$.client.note",
    ),
    Poison("65 levels deep", _nested(63), 422, "nested_too_deep", "$.client.deep" + "[0]" * 62),
    Poison("100000 levels deep", _nested(100_000), 422, "nested_too_deep"),
    Poison("not JSON", '{"workflow": "demo", ', 400, "malformed_json"),
]
NOT_UTF8 = Poison("not UTF-8", '{"workflow": "d\udcffemo"}', 400, "malformed_json")
"""Only in a JSON body: a form field's bytes are decoded by the form parser, not the JSON one."""
POISONS = [*TEXT_POISONS, NOT_UTF8]


def body_bytes(poison: Poison) -> bytes:
    # surrogateescape turns the \udcff of "not UTF-8" back into the raw byte 0xff.
    return poison.body.encode("utf-8", "surrogateescape")


def refusal_problems(poison: Poison, response: httpx.Response) -> list[str]:
    """What is wrong with ``response`` as the answer to ``poison`` (empty: nothing)."""
    try:
        body = response.json()
    except ValueError:
        return [f"{poison.name}: {response.status_code} {response.text[:200]!r}"]
    got = (response.status_code, body.get("code"), body.get("type"))
    problems = []
    if got != (poison.status, poison.code, "validation"):
        problems.append(f"{poison.name}: {got} {body.get('detail')!r}")
    if poison.path is not None and body.get("path") != poison.path:
        problems.append(f"{poison.name}: path {body.get('path')!r}, expected {poison.path!r}")
    return problems


# --- checks both APIs must pass, each against a live service or balancer -------------------


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def check_an_id_naming_another_task_s_keys_is_refused(api: httpx.AsyncClient) -> None:
    task = await submit(api, graphs.solid_image(_fresh("k")), task_id=_fresh("x"))

    collision = await api.post(
        "/api/v1/generate",
        json={"prompt": graphs.solid_image(_fresh("k")), "task_id": f"{task['id']}:events"},
    )

    assert (collision.status_code, collision.json()["code"]) == (422, "invalid_request")
    assert (await wait_until_finished(api, task["id"], timeout_s=30))["status"] == "succeeded"


async def check_an_id_whose_keys_were_claimed_first_still_runs(api: httpx.AsyncClient) -> None:
    squatter = await api.post(
        "/api/v1/generate",
        json={"prompt": graphs.solid_image(_fresh("q")), "task_id": "order-200:events"},
    )
    assert squatter.status_code == 422

    task = await submit(api, graphs.solid_image(_fresh("q")), task_id="order-200")

    assert (await wait_until_finished(api, task["id"], timeout_s=30))["status"] == "succeeded"


async def check_every_task_route_refuses_an_id_outside_the_alphabet(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, graphs.solid_image(_fresh("r")), task_id=_fresh("y"))
    await wait_until_finished(api, task["id"], timeout_s=30)
    # ":events" would address the task's event stream as if it were a task record.
    for bad_id in (f"{task['id']}:events", "-dash-first", "a" * 129, "new%0Aline", "sp%20ace"):
        for method, path in (
            ("GET", f"/api/v1/tasks/{bad_id}"),
            ("DELETE", f"/api/v1/tasks/{bad_id}"),
            ("GET", f"/api/v1/tasks/{bad_id}/events"),
            ("GET", f"/api/v1/tasks/{bad_id}/logs"),
            ("GET", f"/api/v1/tasks/{bad_id}/outputs/0"),
        ):
            response = await api.request(method, path)
            body = response.json()
            assert (response.status_code, body["code"], body["type"]) == (
                422, "invalid_task_id", "validation",
            ), (method, path, body)  # fmt: skip


async def check_priority_outside_the_queue_s_range_is_refused(api: httpx.AsyncClient) -> None:
    for priority in (2000, -2000, 2**63):
        response = await api.post(
            "/api/v1/generate", json={"workflow": "demo", "priority": priority}
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request")


async def check_the_largest_seed_still_runs(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/generate",
        json={"workflow": "txt2img-sdxl", "params": {"prompt": "x", "steps": 2, "seed": SEED_MAX}},
    )
    assert response.status_code == 202, response.text

    task = await wait_until_finished(api, response.json()["id"], timeout_s=30)

    assert task["status"] == "succeeded"
    assert task["params"]["seed"] == SEED_MAX


# --- graphs of the wrong shape ---------------------------------------------------------------


def _solid(prefix: str) -> dict[str, Any]:
    return graphs.solid_image(_fresh(prefix))


def _with_node(node: Any) -> dict[str, Any]:
    """A valid graph plus node "9" as given."""
    return {**_solid("shape"), "9": node}


BAD_GRAPHS: dict[str, dict[str, Any]] = {
    "class_type a list": _with_node({"class_type": ["EmptyImage"], "inputs": {}}),
    "class_type an object": _with_node({"class_type": {"name": "EmptyImage"}, "inputs": {}}),
    "class_type empty": _with_node({"class_type": "", "inputs": {}}),
    "class_type missing": _with_node({"inputs": {}}),
    "a node that is a string": _with_node("EmptyImage"),
    "a node that is a list": _with_node(["EmptyImage", {}]),
    "inputs a list": _with_node({"class_type": "EmptyImage", "inputs": [1, 2]}),
    "inputs missing": _with_node({"class_type": "EmptyImage"}),
    "_meta a string": _with_node({"class_type": "EmptyImage", "inputs": {}, "_meta": "x"}),
}
"""Graphs ComfyUI cannot refuse cleanly (a list as class_type makes it answer 500)."""


async def check_a_graph_of_the_wrong_shape_is_refused_at_intake(api: httpx.AsyncClient) -> None:
    """422 ``invalid_request`` naming the node, at once: no attempt is made."""
    problems = []
    for name, graph in BAD_GRAPHS.items():
        response = await api.post("/api/v1/generate", json={"prompt": graph})
        body = response.json()
        if (response.status_code, body.get("code")) != (422, "invalid_request"):
            problems.append(f"{name}: {response.status_code} {body}")
        elif not any(error["loc"][:3] == ["body", "prompt", "9"] for error in body["errors"]):
            problems.append(f"{name}: the error does not name node 9: {body['errors']}")
    assert problems == []


async def check_inputs_may_be_any_json_comfyui_takes(api: httpx.AsyncClient) -> None:
    """Links, literal lists wrapped as ComfyUI wants them, objects and nulls in inputs the
    node does not declare (ComfyUI ignores those) all pass, and the graph runs."""
    graph = _solid("any-input")
    graph["1"]["inputs"] |= {
        "literal_list": {"__value__": [1, "two", None]},
        "nested": {"a": [{"b": [1.5, True]}]},
        "nothing": None,
    }
    graph["1"]["_meta"] = {"title": "Solid"}

    task = await submit(api, graph)

    assert (await wait_until_finished(api, task["id"], timeout_s=30))["status"] == "succeeded"


# --- bounds on graphs, strings and images ----------------------------------------------------

MAX_GRAPH_NODES = 1000
MAX_STRING_BYTES = 64 * 1024
MAX_IMAGE_PIXELS = 25_000_000
"""The processes' defaults, which these checks rely on."""


def graph_of(nodes: int) -> dict[str, Any]:
    """A valid graph of ``nodes`` nodes: one image saved, the rest unused constants."""
    graph = _solid("big")
    for index in range(nodes - len(graph)):
        graph[f"c{index}"] = {"class_type": "EmptyImage", "inputs": {"width": 8}}
    return graph


async def check_a_graph_over_the_node_limit_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/generate", json={"prompt": graph_of(MAX_GRAPH_NODES + 1)})

    body = response.json()
    assert (response.status_code, body["code"], body["type"]) == (
        422, "graph_too_large", "validation",
    ), body  # fmt: skip
    assert str(MAX_GRAPH_NODES) in body["detail"]


async def check_strings_over_the_limit_are_refused_wherever_they_are(
    api: httpx.AsyncClient,
) -> None:
    long_text = "x" * (MAX_STRING_BYTES + 1)
    # 2 bytes each in UTF-8: under the limit in characters, over it in bytes
    long_utf8 = "\u00e9" * (MAX_STRING_BYTES // 2 + 1)
    graph = _solid("long")
    graph["2"]["inputs"]["filename_prefix"] = long_text
    key_graph = _solid("long-key")
    key_graph["1"]["inputs"][long_text] = 1
    cases = {
        '$.prompt["2"].inputs.filename_prefix': {"prompt": graph},
        "$.params.prompt": {"workflow": "txt2img-sdxl", "params": {"prompt": long_utf8}},
        "$.client.note": {"workflow": "demo", "client": {"note": long_text}},
        f'$.prompt["1"].inputs["{long_text[:8]}': {"prompt": key_graph},
    }
    for path, body in cases.items():
        response = await api.post("/api/v1/generate", json=body)
        answer = response.json()
        assert (response.status_code, answer["code"]) == (422, "string_too_long"), answer
        assert answer["path"].startswith(path), (answer["path"][:80], path)


async def check_a_long_prompt_under_the_limit_runs(api: httpx.AsyncClient) -> None:
    prompt = "a lighthouse at dusk, " * (MAX_STRING_BYTES // 22)
    response = await api.post(
        "/api/v1/generate",
        json={"workflow": "txt2img-sdxl", "params": {"prompt": prompt, "steps": 2}},
    )
    assert response.status_code == 202, response.text

    task = await wait_until_finished(api, response.json()["id"], timeout_s=30)

    assert task["status"] == "succeeded"


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG whose header declares ``width`` x ``height`` pixels, with a few
    bytes of pixel data: what a decompression bomb looks like before it is decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def real_png(size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "teal").save(buffer, format="PNG")
    return buffer.getvalue()


BAD_IMAGES: dict[str, tuple[bytes, str]] = {
    "13000 x 13000 declared": (png_declaring(13000, 13000), "pixels is larger than"),
    "a truncated PNG": (real_png((64, 64))[:-20], "truncated"),
    "a PNG signature and garbage": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "invalid image"),
    "a GIF": (b"GIF89a" + b"\x00" * 64, "not a PNG, JPEG or WebP"),
}
"""Image parameters every API refuses (422 invalid_params), and what the error says."""


def _img2img(image: str) -> dict[str, Any]:
    return {"workflow": "img2img-sdxl", "params": {"prompt": "x", "steps": 2, "image": image}}


async def check_images_are_checked_by_their_header_before_anything_is_stored(
    api: httpx.AsyncClient,
) -> None:
    problems = []
    for name, (data, reason) in BAD_IMAGES.items():
        for encoded in (_base64(data), f"data:image/png;base64,{_base64(data)}"):
            response = await api.post("/api/v1/generate", json=_img2img(encoded))
            problems += _image_refusal_problems(name, response, reason)
    assert problems == []


def _image_refusal_problems(name: str, response: httpx.Response, reason: str) -> list[str]:
    body = response.json()
    if (response.status_code, body.get("code")) != (422, "invalid_params"):
        return [f"{name}: {response.status_code} {body}"]
    if reason not in body["errors"].get("image", ""):
        return [f"{name}: {body['errors']}"]
    return []


async def check_an_image_within_the_limits_runs(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/generate", json=_img2img(_base64(real_png())))
    assert response.status_code == 202, response.text

    task = await wait_until_finished(api, response.json()["id"], timeout_s=30)

    assert task["status"] == "succeeded"


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- media types -----------------------------------------------------------------------------

EVIL_ORIGIN = {"Origin": "https://evil.example"}


async def check_only_json_bodies_are_read(
    api: httpx.AsyncClient, *, forms_too: bool = False
) -> None:
    """415 ``unsupported_media_type`` for any other body: what a page on another site can
    post without asking first (text/plain, an urlencoded form) never gets in."""
    body = json.dumps({"workflow": "demo"}).encode()
    refused = {
        "text/plain": {"content-type": "text/plain", **EVIL_ORIGIN},
        "urlencoded form": {"content-type": "application/x-www-form-urlencoded", **EVIL_ORIGIN},
        "no content-type": {},
        "another charset": {"content-type": "application/json; charset=latin-1"},
        "a JSON look-alike": {"content-type": "application/json-patch+json"},
    }
    if not forms_too:
        refused["multipart"] = {"content-type": "multipart/form-data; boundary=x"}
    problems = []
    for name, headers in refused.items():
        response = await api.post("/api/v1/generate", content=body, headers=headers)
        answer = response.json()
        if (response.status_code, answer.get("code")) != (415, "unsupported_media_type"):
            problems.append(f"{name}: {response.status_code} {answer}")
    assert problems == []
    accepted = await api.post(
        "/api/v1/generate",
        content=body,
        headers={"content-type": "Application/JSON; Charset=UTF-8", **EVIL_ORIGIN},
    )
    assert accepted.status_code == 202, accepted.text


# --- slow and short bodies -------------------------------------------------------------------


@dataclass(frozen=True)
class RawAnswer:
    status: int
    body: dict[str, Any]
    closed: bool
    """The server closed the connection after answering."""
    after_s: float


async def post_slowly(
    url: str,
    *,
    declared: int,
    chunks: list[bytes],
    interval_s: float,
    headers: Mapping[str, str],
    wait_s: float = 10,
    await_close: bool = True,
) -> RawAnswer:
    """POST to ``url`` with ``headers``, declaring ``declared`` body bytes, then send
    ``chunks`` one every ``interval_s`` (and nothing more); the server's answer, read over the
    same socket, and with ``await_close`` whether the server then closed it."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    started = time.monotonic()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    )
    writer.write(head.encode())
    try:
        sending = asyncio.create_task(_trickle(writer, chunks, interval_s))
        raw = await asyncio.wait_for(_read_answer(reader), wait_s)
        sending.cancel()
        closed = await_close and await _closed_by_server(reader, wait_s)
    finally:
        writer.close()
    return RawAnswer(*_parse_answer(raw), closed=closed, after_s=time.monotonic() - started)


async def _closed_by_server(reader: asyncio.StreamReader, wait_s: float) -> bool:
    """Whether the server ends the connection within ``wait_s``. A reset counts: bytes the
    client sent after the server closed make the server's kernel answer with RST."""
    try:
        return await asyncio.wait_for(reader.read(1), wait_s) == b""
    except ConnectionResetError:
        return True


async def _trickle(writer: asyncio.StreamWriter, chunks: list[bytes], interval_s: float) -> None:
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(interval_s)


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def _parse_answer(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def check_a_body_that_never_arrives_is_cut(
    url: str, *, timeout_s: float, headers: Mapping[str, str]
) -> None:
    """The body promises 100 bytes and sends 10: 408 ``body_timeout`` after ``timeout_s``,
    and the connection is closed."""
    answer = await post_slowly(
        f"{url}/api/v1/generate",
        declared=100,
        chunks=[b'{"workflow'],
        interval_s=0,
        headers=headers,
    )

    assert (answer.status, answer.body["code"], answer.body["type"]) == (
        408, "body_timeout", "validation",
    ), answer  # fmt: skip
    assert answer.closed
    assert timeout_s * 0.9 <= answer.after_s < timeout_s + 3, answer.after_s


async def check_a_trickling_body_gets_no_fresh_timeout_per_chunk(
    url: str, *, timeout_s: float, headers: Mapping[str, str]
) -> None:
    """A byte every fifth of the timeout keeps arriving, yet the whole body must be in
    within the timeout."""
    answer = await post_slowly(
        f"{url}/api/v1/generate",
        declared=200,
        chunks=[b" "] * 50,
        interval_s=timeout_s / 5,
        headers=headers,
    )

    assert (answer.status, answer.body["code"]) == (408, "body_timeout"), answer
    assert answer.after_s < timeout_s + 3, answer.after_s


# --- the contract: OpenAPI and methods -------------------------------------------------------

ROUTELESS_CODES = {"not_found", "method_not_allowed"}
"""Answers to a path or method no route serves: no operation can document them."""


async def check_the_openapi_documents_every_error_as_answered(
    api: httpx.AsyncClient, answers: dict[str, int]
) -> None:
    """Every error response of every operation is an ErrorBody whose ``code`` is one of
    those listed for it; each listed code is one the app answers, with that status; every
    code the app answers is listed somewhere. ``answers``: code -> status (``answer_codes``)."""
    schema = (await api.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    documented = documented_codes(schema)
    problems = []
    listed: set[str] = set()
    for (method, path), statuses in documented.items():
        for status, codes in statuses.items():
            if not codes and (path, status) != ("/readyz", 503):
                problems.append(f"{method} {path} {status}: no ErrorBody codes")
            problems += [
                f"{method} {path} {status}: {code} is answered with {answers.get(code)}"
                for code in codes
                if answers.get(code) != status
            ]
            listed |= set(codes)
    assert problems == []
    assert set(answers) - ROUTELESS_CODES <= listed, set(answers) - ROUTELESS_CODES - listed


async def check_the_openapi_names_what_the_history_routes_answer(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    events = paths["/api/v1/tasks/{task_id}/events"]["get"]["responses"]
    logs = paths["/api/v1/tasks/{task_id}/logs"]["get"]["responses"]

    assert response_codes(events["400"]) == ["invalid_event_id"]
    assert list(logs["404"]["content"]) == ["application/json"]
    missing = await api.get("/api/v1/tasks/never-was/logs")
    assert (missing.status_code, missing.headers["content-type"]) == (404, "application/json")


async def check_a_method_a_path_does_not_serve_gets_405_with_every_method_it_does(
    api: httpx.AsyncClient,
) -> None:
    """``Allow`` lists every method of the path (Starlette's own lists only the first
    route's: ``GET`` where ``DELETE`` is served too)."""
    for method, path, allowed in (
        ("OPTIONS", "/api/v1/tasks/some-task", "DELETE, GET"),
        ("PUT", "/api/v1/tasks/some-task", "DELETE, GET"),
        ("OPTIONS", "/api/v1/generate", "POST"),
        ("GET", "/api/v1/generate", "POST"),
        ("DELETE", "/api/v1/tasks/some-task/logs", "GET"),
    ):
        response = await api.request(method, path, headers=EVIL_ORIGIN)
        body = response.json()
        assert (response.status_code, body["code"]) == (405, "method_not_allowed"), (method, path)
        assert response.headers["allow"] == allowed, (method, path)


async def check_an_event_stream_outlives_the_body_timeout(
    api: httpx.AsyncClient, task_id: str, *, timeout_s: float
) -> None:
    """A stream of a task that does not end stays open past the body's deadline (its
    heartbeats keep coming): only the body is timed, not the wait for the client to go."""
    path = f"/api/v1/tasks/{task_id}/events"
    async with api.stream("GET", path, timeout=timeout_s * 10) as response:
        assert response.status_code == 200
        started = time.monotonic()
        async for line in response.aiter_lines():
            if line.startswith(": keepalive") and time.monotonic() - started > 2 * timeout_s:
                return
    raise AssertionError("the event stream ended before twice the body timeout had passed")


async def check_a_graph_cannot_name_a_staged_input(api: httpx.AsyncClient) -> None:
    """Other tasks' images are staged under comfy-stack/: a graph of one's own cannot load
    them, whatever the name."""
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "comfy-stack/0123abcd.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    response = await api.post("/api/v1/generate", json={"prompt": graph})
    assert (response.status_code, response.json()["code"]) == (422, "staged_input")


async def check_an_idempotency_key_names_one_request(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": _fresh("order")}
    body = {"prompt": graphs.solid_image(_fresh("i"))}

    first = await api.post("/api/v1/generate", json=body, headers=key)
    again = await api.post("/api/v1/generate", json=body, headers=key)
    other = await api.post("/api/v1/generate", json={"workflow": "demo"}, headers=key)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reuse")
