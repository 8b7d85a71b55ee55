"""ComfyClient against the recorded ComfyUI exchanges (httpx.MockTransport) and real sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from comfy_shared.comfyui import (
    ComfyClient,
    ComfyError,
    ComfyNotFound,
    ComfyProtocolError,
    ComfyRequestError,
    ComfyUnavailable,
    ExecutionError,
    ExecutionInterrupted,
    OutputFile,
    PromptRejected,
    model_files,
)
from comfy_testkit.captures import capture_names, load_capture

Synthetic = Callable[..., dict[str, Any]]


def _names(method: str, path_prefix: str, status: int | None = None) -> list[str]:
    found = []
    for name in capture_names():
        capture = load_capture(name)
        request, response = capture["request"], capture["response"]
        if request["method"] != method or not request["path"].startswith(path_prefix):
            continue
        if status is None or response["status"] == status:
            found.append(name)
    return found


PROMPT_OK = _names("POST", "/prompt", 200)
PROMPT_400 = _names("POST", "/prompt", 400)
HISTORY_ONE = [n for n in _names("GET", "/history/") if load_capture(n)["response"]["body"]]


def _body(name: str) -> Any:
    return load_capture(name)["response"]["body"]


def _request_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = load_capture(name)["request"].get("body", {})
    return body


def test_capture_groups_are_not_empty() -> None:
    assert len(PROMPT_OK) >= 8
    assert len(PROMPT_400) >= 8
    assert len(HISTORY_ONE) >= 6


# --- prompts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROMPT_OK)
async def test_submit_parses_every_accepted_prompt(comfy_for: Any, name: str) -> None:
    comfy, transport = comfy_for(name)
    sent, answer = _request_body(name), _body(name)

    result = await comfy.submit(
        sent["prompt"], prompt_id=answer["prompt_id"], client_id=sent["client_id"]
    )

    assert result.prompt_id == answer["prompt_id"]
    assert result.number == answer["number"]
    assert result.node_errors == {}
    assert transport.json_bodies()[0]["prompt_id"] == answer["prompt_id"]


async def test_submit_sends_extra_data_and_front(comfy_for: Any, synthetic: Synthetic) -> None:
    answer = {"prompt_id": "p1", "number": -18, "node_errors": {}}
    comfy, transport = comfy_for(synthetic("POST", "/prompt", 200, answer))

    result = await comfy.submit(
        {"1": {}}, prompt_id="p1", client_id="c1", extra_data={"foo": 1}, front=True
    )

    assert result.number == -18
    assert transport.json_bodies() == [
        {
            "prompt": {"1": {}},
            "prompt_id": "p1",
            "client_id": "c1",
            "extra_data": {"foo": 1},
            "front": True,
        }
    ]


async def test_submit_200_with_node_errors_is_partial_success(
    comfy_for: Any, synthetic: Synthetic
) -> None:
    node_errors = _body("16-post-prompt-400-missing-input")["node_errors"]
    answer = {"prompt_id": "p2", "number": 3, "node_errors": node_errors}
    comfy, _ = comfy_for(synthetic("POST", "/prompt", 200, answer))

    result = await comfy.submit({}, prompt_id="p2", client_id="c")

    assert result.node_errors == node_errors


@pytest.mark.parametrize("name", PROMPT_400)
async def test_submit_400_raises_prompt_rejected_with_dicts_unchanged(
    comfy_for: Any, name: str
) -> None:
    comfy, _ = comfy_for(name)
    sent, answer = _request_body(name), _body(name)

    with pytest.raises(PromptRejected) as caught:
        await comfy.submit(
            sent.get("prompt", {}), prompt_id="p", client_id=sent.get("client_id", "c")
        )

    assert caught.value.error == answer["error"]
    assert caught.value.node_errors == answer["node_errors"]
    assert caught.value.error_type == answer["error"]["type"]
    assert caught.value.error_message == answer["error"]["message"]
    assert caught.value.status_code == 400


async def test_submit_400_without_error_object_is_protocol_error(
    comfy_for: Any, synthetic: Synthetic
) -> None:
    comfy, _ = comfy_for(synthetic("POST", "/prompt", 400, {"oops": 1}))

    with pytest.raises(ComfyProtocolError):
        await comfy.submit({}, prompt_id="p", client_id="c")


INVALID_PROMPT_ID = {
    "type": "invalid_prompt_id",
    "message": "prompt_id must be a valid UUID",
    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
    "omit it to let the server generate one",
    "extra_info": {},
}


async def test_submit_with_a_prompt_id_comfyui_refuses_is_prompt_rejected(
    comfy_for: Any, synthetic: Synthetic
) -> None:
    answer = {"error": INVALID_PROMPT_ID, "node_errors": {}}
    comfy, _ = comfy_for(synthetic("POST", "/prompt", 400, answer))

    with pytest.raises(PromptRejected) as caught:
        await comfy.submit({"1": {}}, prompt_id="task-1", client_id="c")

    assert caught.value.error_type == "invalid_prompt_id"
    assert caught.value.error == INVALID_PROMPT_ID
    assert (caught.value.node_errors, caught.value.status_code) == ({}, 400)
    assert "invalid_prompt_id" in str(caught.value)


# --- queue -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["06-get-queue-idle", "54-get-queue-idle-end"])
async def test_get_queue_idle(comfy_for: Any, name: str) -> None:
    comfy, _ = comfy_for(name)

    queue = await comfy.get_queue()

    assert queue.running == []
    assert queue.pending == []
    assert queue.queue_remaining == 0


async def test_get_queue_running(comfy_for: Any) -> None:
    comfy, _ = comfy_for("27-get-queue-running")

    queue = await comfy.get_queue()

    running = queue.running[0]
    assert running.prompt_id == "7767c92b-b2c7-4e05-80d7-cb67621065f2"
    assert running.number == 12
    assert running.client_id == "fixture-client-22ce04f3"
    assert running.outputs_to_execute == ["99"]
    assert "99" in running.prompt
    assert queue.is_running(running.prompt_id)
    assert queue.position(running.prompt_id) == 0


async def test_get_queue_running_and_pending(comfy_for: Any) -> None:
    comfy, _ = comfy_for("33-get-queue-running-and-pending")

    queue = await comfy.get_queue()

    a, b, c = (
        "139d3cee-afa9-483c-8272-4b9a5d27b648",
        "7c9f4131-0eb1-4682-b6d4-45b7b774736a",
        "b37a13ac-d632-4c31-b1a5-9d6eab7fef88",
    )
    assert [item.prompt_id for item in queue.pending] == [b, c]
    assert (queue.position(a), queue.position(b), queue.position(c)) == (0, 1, 2)
    assert queue.is_pending(b)
    assert not queue.is_running(b)
    assert queue.position("unknown") is None
    assert queue.queue_remaining == 3


async def test_delete_from_queue_then_queue_shrinks(comfy_for: Any) -> None:
    comfy, transport = comfy_for("35-post-queue-delete-pending", "36-get-queue-after-delete")
    deleted = "7c9f4131-0eb1-4682-b6d4-45b7b774736a"

    await comfy.delete_from_queue([deleted])
    queue = await comfy.get_queue()

    assert transport.json_bodies()[0] == {"delete": [deleted]}
    assert queue.position(deleted) is None
    assert [item.prompt_id for item in queue.pending] == ["b37a13ac-d632-4c31-b1a5-9d6eab7fef88"]


async def test_clear_queue_and_free_send_documented_bodies(
    comfy_for: Any, synthetic: Synthetic
) -> None:
    comfy, transport = comfy_for(
        synthetic("POST", "/queue", 200, "", content_type=""),
        synthetic("POST", "/free", 200, "", content_type=""),
    )

    await comfy.clear_queue()
    await comfy.free(unload_models=True)

    assert transport.json_bodies() == [
        {"clear": True},
        {"unload_models": True, "free_memory": False},
    ]


@pytest.mark.parametrize(
    ("name", "remaining"), [("07-get-prompt-idle", 0), ("34-get-prompt-busy", 3)]
)
async def test_get_prompt_info(comfy_for: Any, name: str, remaining: int) -> None:
    comfy, _ = comfy_for(name)

    assert (await comfy.get_prompt_info()).queue_remaining == remaining


async def test_interrupt_targeted(comfy_for: Any) -> None:
    comfy, transport = comfy_for("28-post-interrupt-with-prompt-id")

    await comfy.interrupt("7767c92b-b2c7-4e05-80d7-cb67621065f2")

    assert transport.json_bodies() == [{"prompt_id": "7767c92b-b2c7-4e05-80d7-cb67621065f2"}]


@pytest.mark.parametrize("name", ["42-post-interrupt-global-empty-json", "44-post-interrupt-idle"])
async def test_interrupt_global_sends_empty_object(comfy_for: Any, name: str) -> None:
    comfy, transport = comfy_for(name)

    await comfy.interrupt(None)

    assert transport.json_bodies() == [{}]


# --- cancel ------------------------------------------------------------------------------------

JOB = "7767c92b-b2c7-4e05-80d7-cb67621065f2"
JOB_CANCEL = f"/api/jobs/{JOB}/cancel"
# What an aiohttp server without the route answers: 404, or 405 where ComfyUI's static web root
# (GET/HEAD on every path) matches the path.
ROUTE_MISSING = {
    404: "404: Not Found",
    405: "405: Method Not Allowed",
}


def _sent(transport: Any) -> list[tuple[str, str, Any]]:
    return [
        (r.method, r.url.raw_path.decode(), json.loads(r.content) if r.content else None)
        for r in transport.requests
    ]


def _fallback_captures(synthetic: Synthetic, missing: int) -> list[dict[str, Any]]:
    text = ROUTE_MISSING[missing]
    return [
        synthetic("POST", JOB_CANCEL, missing, text, content_type="text/plain; charset=utf-8"),
        synthetic("POST", "/queue", 200, "", content_type=""),
        synthetic("POST", "/interrupt", 200, "", content_type=""),
    ]


FALLBACK = [
    ("POST", "/queue", {"delete": [JOB]}),
    ("POST", "/interrupt", {"prompt_id": JOB}),
]


@pytest.mark.parametrize("cancelled", [True, False])
async def test_cancel_job_returns_comfyuis_answer(
    comfy_for: Any, synthetic: Synthetic, cancelled: bool
) -> None:
    comfy, transport = comfy_for(synthetic("POST", JOB_CANCEL, 200, {"cancelled": cancelled}))

    assert await comfy.cancel_job(JOB) is cancelled
    assert _sent(transport) == [("POST", JOB_CANCEL, None)]


@pytest.mark.parametrize("status", sorted(ROUTE_MISSING))
async def test_cancel_job_without_the_route_is_none(
    comfy_for: Any, synthetic: Synthetic, status: int
) -> None:
    text = ROUTE_MISSING[status]
    comfy, _ = comfy_for(
        synthetic("POST", JOB_CANCEL, status, text, content_type="text/plain; charset=utf-8")
    )

    assert await comfy.cancel_job(JOB) is None


async def test_cancel_job_quotes_the_id(comfy_for: Any, synthetic: Synthetic) -> None:
    comfy, transport = comfy_for(
        synthetic("POST", "/api/jobs/a%2Fb%3Fc/cancel", 200, {"cancelled": False})
    )

    assert await comfy.cancel_job("a/b?c") is False
    assert transport.requests[0].url.raw_path == b"/api/jobs/a%2Fb%3Fc/cancel"


@pytest.mark.parametrize(
    ("status", "body", "content_type", "raised"),
    [
        (500, "500 Internal Server Error", "text/plain", ComfyUnavailable),
        (400, {"error": "job_id is required"}, "application/json", ComfyRequestError),
        (403, "", "", ComfyRequestError),
        (200, "<html>not json</html>", "text/html", ComfyProtocolError),
        (200, {"cancelled": "yes"}, "application/json", ComfyProtocolError),
        (200, {}, "application/json", ComfyProtocolError),
        (200, [True], "application/json", ComfyProtocolError),
    ],
)
async def test_cancel_job_failures_map_to_the_exception_tree(
    comfy_for: Any,
    synthetic: Synthetic,
    status: int,
    body: Any,
    content_type: str,
    raised: type[Exception],
) -> None:
    comfy, _ = comfy_for(synthetic("POST", JOB_CANCEL, status, body, content_type=content_type))

    with pytest.raises(raised) as caught:
        await comfy.cancel_job(JOB)

    assert type(caught.value) is raised  # e.g. a 400 is no ComfyNotFound


@pytest.mark.parametrize("cancelled", [True, False])
async def test_cancel_prompt_uses_the_jobs_route_when_the_server_has_it(
    comfy_for: Any, synthetic: Synthetic, cancelled: bool
) -> None:
    comfy, transport = comfy_for(synthetic("POST", JOB_CANCEL, 200, {"cancelled": cancelled}))

    await comfy.cancel_prompt(JOB)
    await comfy.cancel_prompt(JOB)

    # A finished prompt (False) needs no fallback either: the jobs route looked everywhere.
    assert _sent(transport) == [("POST", JOB_CANCEL, None)] * 2


@pytest.mark.parametrize("missing", sorted(ROUTE_MISSING))
async def test_cancel_prompt_falls_back_and_remembers_it_per_client(
    comfy_for: Any, synthetic: Synthetic, missing: int
) -> None:
    comfy, transport = comfy_for(*_fallback_captures(synthetic, missing))

    await comfy.cancel_prompt(JOB)
    await comfy.cancel_prompt(JOB)

    assert _sent(transport) == [("POST", JOB_CANCEL, None), *FALLBACK, *FALLBACK]

    other, other_transport = comfy_for(*_fallback_captures(synthetic, missing))
    await other.cancel_prompt(JOB)
    assert _sent(other_transport) == [("POST", JOB_CANCEL, None), *FALLBACK]


async def test_cancel_prompt_does_not_fall_back_on_other_errors(
    comfy_for: Any, synthetic: Synthetic, trouble: Any
) -> None:
    comfy, transport = comfy_for(trouble("POST", JOB_CANCEL))

    for _ in range(2):
        with pytest.raises(ComfyUnavailable):
            await comfy.cancel_prompt(JOB)

    # A failing server is not an old one: the next call tries the jobs route again.
    assert _sent(transport) == [("POST", JOB_CANCEL, None)] * 2


async def test_cancel_prompt_fallback_failures_are_raised(
    comfy_for: Any, synthetic: Synthetic, trouble: Any
) -> None:
    comfy, transport = comfy_for(
        synthetic("POST", JOB_CANCEL, 404, "404: Not Found", content_type="text/plain"),
        trouble("POST", "/queue"),
    )

    with pytest.raises(ComfyUnavailable):
        await comfy.cancel_prompt(JOB)

    assert [path for _, path, _ in _sent(transport)] == [JOB_CANCEL, "/queue"]


# --- history -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HISTORY_ONE)
async def test_get_history_parses_every_entry(comfy_for: Any, name: str) -> None:
    comfy, _ = comfy_for(name)
    prompt_id, raw = next(iter(_body(name).items()))

    entry = await comfy.get_history(prompt_id)

    assert entry is not None
    assert entry.prompt_id == prompt_id
    assert entry.prompt.number == raw["prompt"][0]
    assert entry.prompt.prompt == raw["prompt"][2]
    assert entry.outputs == raw["outputs"]
    assert entry.status is not None
    assert entry.status.status_str == raw["status"]["status_str"]
    assert entry.succeeded is raw["status"]["completed"]
    assert len(entry.status.events()) == len(raw["status"]["messages"])


async def test_history_success_lists_output_files(comfy_for: Any) -> None:
    comfy, _ = comfy_for("10-get-history-ok")

    entry = await comfy.get_history("1c97feec-9c56-402a-9f3b-36f736bb1a0a")

    assert entry is not None
    assert entry.files() == [
        OutputFile(
            node_id="3",
            kind="images",
            filename="fixture_minimal_00001_.png",
            subfolder="",
            type="output",
        )
    ]
    assert entry.meta["3"]["real_node_id"] == "3"


async def test_history_execution_error_exposes_the_error(comfy_for: Any) -> None:
    comfy, _ = comfy_for("25-get-history-execution-error")

    entry = await comfy.get_history("0fcff6f0-84ad-4c4b-9222-7d6041f40427")

    assert entry is not None
    assert entry.status is not None
    assert not entry.succeeded
    error = entry.status.error
    assert isinstance(error, ExecutionError)
    assert (error.node_id, error.node_type, error.exception_type) == (
        "2",
        "ImageToMask",
        "IndexError",
    )
    assert error.executed == ["1"]
    assert entry.status.interruption is None
    assert entry.files() == []


async def test_history_interrupted_exposes_the_interruption(comfy_for: Any) -> None:
    comfy, _ = comfy_for("29-get-history-interrupted")

    entry = await comfy.get_history("7767c92b-b2c7-4e05-80d7-cb67621065f2")

    assert entry is not None
    assert entry.status is not None
    assert entry.status.status_str == "error"
    interruption = entry.status.interruption
    assert isinstance(interruption, ExecutionInterrupted)
    assert interruption.node_id == "12"
    assert entry.status.error is None


async def test_get_history_of_unfinished_or_unknown_prompt_is_none(comfy_for: Any) -> None:
    comfy, _ = comfy_for("39-get-history-deleted-never-ran")

    assert await comfy.get_history("7c9f4131-0eb1-4682-b6d4-45b7b774736a") is None


async def test_get_history_all_max_items(comfy_for: Any) -> None:
    comfy, transport = comfy_for("53-get-history-max-items-2")

    entries = await comfy.get_history_all(max_items=2)

    assert list(entries) == list(_body("53-get-history-max-items-2"))
    assert all(entries[key].prompt_id == key for key in entries)
    assert transport.requests[0].url.params["max_items"] == "2"


async def test_get_history_all_sends_offset(comfy_for: Any, synthetic: Synthetic) -> None:
    comfy, transport = comfy_for(synthetic("GET", "/history?offset=5&max_items=1", 200, {}))

    assert await comfy.get_history_all(max_items=1, offset=5) == {}
    assert dict(transport.requests[0].url.params) == {"max_items": "1", "offset": "5"}


async def test_get_history_quotes_the_prompt_id(comfy_for: Any, synthetic: Synthetic) -> None:
    comfy, transport = comfy_for(synthetic("GET", "/history/a%2Fb%20c", 200, {}))

    assert await comfy.get_history("a/b c") is None
    assert transport.requests[0].url.raw_path == b"/history/a%2Fb%20c"


# --- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "filename", "folder"),
    [
        ("11-get-view-output-png", "fixture_minimal_00001_.png", "output"),
        ("49-get-view-uploaded-input", "fixture_upload.png", "input"),
    ],
)
async def test_view_returns_the_file(comfy_for: Any, name: str, filename: str, folder: str) -> None:
    comfy, _ = comfy_for(name)

    data = await comfy.view(filename, "", folder)

    assert hashlib.sha256(data).hexdigest() == _body(name)["sha256"]


async def test_view_missing_file_raises_not_found(comfy_for: Any) -> None:
    comfy, _ = comfy_for("12-get-view-missing")

    with pytest.raises(ComfyNotFound) as caught:
        await comfy.view("does-not-exist.png")

    assert caught.value.status_code == 404


async def test_stream_view_yields_the_file_in_chunks(comfy_for: Any) -> None:
    comfy, _ = comfy_for("11-get-view-output-png")

    async with comfy.stream_view("fixture_minimal_00001_.png") as stream:
        chunks = [chunk async for chunk in stream.iter_bytes(100)]
        content_type, length = stream.content_type, stream.content_length

    assert len(chunks) > 1
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == _body("11-get-view-output-png")["sha256"]
    assert content_type == "image/png"
    assert length == 456


async def test_stream_view_missing_file_raises_not_found(comfy_for: Any) -> None:
    comfy, _ = comfy_for("12-get-view-missing")

    with pytest.raises(ComfyNotFound):
        async with comfy.stream_view("does-not-exist.png"):
            pytest.fail("must not get here")


class _BreaksMidway(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"first bytes"
        raise httpx.ReadError("connection reset")


async def test_stream_view_error_midway_is_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_BreaksMidway())

    comfy = ComfyClient("http://comfy.test", transport=httpx.MockTransport(answer))
    async with comfy, comfy.stream_view("big.mp4") as stream:
        with pytest.raises(ComfyUnavailable):
            async for _ in stream.iter_bytes():
                pass


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("45-post-upload-image", {"overwrite": True}),
        ("46-post-upload-image-same-name-no-overwrite", {}),
        ("47-post-upload-image-subfolder", {"subfolder": "fixtures", "overwrite": True}),
    ],
)
async def test_upload_image(comfy_for: Any, name: str, kwargs: dict[str, Any]) -> None:
    comfy, _ = comfy_for(name)
    part = load_capture(name)["request"]["multipart"]["image"]

    result = await comfy.upload_image(base64.b64decode(part["base64"]), part["filename"], **kwargs)

    assert result.model_dump() == _body(name)
    expected_ref = f"{kwargs['subfolder']}/{result.name}" if "subfolder" in kwargs else result.name
    assert result.image_ref == expected_ref


async def test_upload_image_400_is_request_error(comfy_for: Any) -> None:
    comfy, _ = comfy_for("48-post-upload-image-400-no-file")

    with pytest.raises(ComfyRequestError) as caught:
        await comfy.upload_image(b"x", "x.png")

    assert type(caught.value) is ComfyRequestError
    assert caught.value.status_code == 400


async def test_upload_too_big_is_request_error(comfy_for: Any, synthetic: Synthetic) -> None:
    comfy, _ = comfy_for(
        synthetic(
            "POST",
            "/upload/image",
            413,
            "Maximum request body size 104857600 exceeded.",
            content_type="text/plain; charset=utf-8",
        )
    )

    with pytest.raises(ComfyRequestError) as caught:
        await comfy.upload_image(b"x", "x.png")

    assert caught.value.status_code == 413


# --- server info -------------------------------------------------------------------------------


async def test_system_stats(comfy_for: Any) -> None:
    comfy, _ = comfy_for("01-get-system-stats")

    stats = await comfy.system_stats()

    assert stats.system.comfyui_version == "0.8.0"
    assert stats.system.ram_total == 25276502016
    assert stats.device is not None
    assert (stats.device.name, stats.device.type, stats.device.index) == ("cpu", "cpu", None)
    assert stats.device.vram_total == 25276502016
    assert stats.device.vram_free == 23953428480
    assert stats.device.torch_vram_free == 23953428480
    # Keys the model does not declare are kept.
    assert stats.system.model_extra is not None
    assert stats.system.model_extra["required_frontend_version"] == "1.35.9"


async def test_features(comfy_for: Any) -> None:
    comfy, _ = comfy_for("08-get-features")

    assert (await comfy.features())["max_upload_size"] == 104857600


async def test_object_info_for_v1_node(comfy_for: Any) -> None:
    comfy, _ = comfy_for("02-get-object-info-SaveImage")

    info = await comfy.object_info_for("SaveImage")

    assert info is not None
    assert info.name == "SaveImage"
    assert info.output_node is True
    assert list(info.input.required) == ["images", "filename_prefix"]
    assert info.input.hidden == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert info.input_order["required"] == ["images", "filename_prefix"]


async def test_object_info_for_v3_node(comfy_for: Any) -> None:
    comfy, _ = comfy_for("04-get-object-info-ImageBlur")

    info = await comfy.object_info_for("ImageBlur")

    assert info is not None
    assert info.display_name is None
    assert info.output == ["IMAGE"]
    assert info.input_spec("image") == ["IMAGE", {}]
    assert info.model_extra is not None
    assert "output_matchtypes" in info.model_extra


async def test_object_info_for_unknown_class_is_none(comfy_for: Any) -> None:
    comfy, _ = comfy_for("05-get-object-info-unknown")

    assert await comfy.object_info_for("NoSuchNode") is None


async def test_object_info_and_model_files(comfy_for: Any, synthetic: Synthetic) -> None:
    catalogue: dict[str, Any] = {}
    for name in ("02-get-object-info-SaveImage", "03-get-object-info-EmptyImage"):
        catalogue.update(_body(name))
    catalogue["CheckpointLoaderSimple"] = {
        "name": "CheckpointLoaderSimple",
        "input": {"required": {"ckpt_name": [["a.safetensors", "b.ckpt"], {"tooltip": "x"}]}},
    }
    comfy, _ = comfy_for(synthetic("GET", "/object_info", 200, catalogue))

    info = await comfy.object_info()

    assert set(info) == {"SaveImage", "EmptyImage", "CheckpointLoaderSimple"}
    assert model_files(info) == {
        "CheckpointLoaderSimple": {"ckpt_name": ["a.safetensors", "b.ckpt"]}
    }


async def test_object_info_skips_a_class_it_cannot_parse(
    comfy_for: Any, synthetic: Synthetic
) -> None:
    catalogue = dict(_body("03-get-object-info-EmptyImage"))
    catalogue["BrokenCustomNode"] = {"name": "BrokenCustomNode", "input": {"required": 7}}
    comfy, _ = comfy_for(synthetic("GET", "/object_info", 200, catalogue))

    assert list(await comfy.object_info()) == ["EmptyImage"]


async def test_logs(comfy_for: Any) -> None:
    comfy, _ = comfy_for("55-get-internal-logs", "56-get-internal-logs-raw")

    text = await comfy.get_logs()
    raw = await comfy.get_logs_raw()

    assert text.startswith("2026-11-22T04:15:34.277952 - Checkpoint files")
    assert raw.entries[0].m == "Checkpoint files will always be loaded safely.\n"
    assert len(raw.entries) == len(_body("56-get-internal-logs-raw")["entries"])


async def test_subscribe_logs(comfy_for: Any, synthetic: Synthetic) -> None:
    comfy, transport = comfy_for(
        synthetic("PATCH", "/internal/logs/subscribe", 200, "", content_type="")
    )

    await comfy.subscribe_logs("client-1")
    await comfy.subscribe_logs("client-1", enabled=False)

    assert transport.json_bodies() == [
        {"clientId": "client-1", "enabled": True},
        {"clientId": "client-1", "enabled": False},
    ]


# --- failures ----------------------------------------------------------------------------------

_CALLS: dict[str, tuple[str, str, Callable[[ComfyClient], Any]]] = {
    "submit": ("POST", "/prompt", lambda c: c.submit({}, prompt_id="p", client_id="c")),
    "queue": ("GET", "/queue", lambda c: c.get_queue()),
    "history": ("GET", "/history/p", lambda c: c.get_history("p")),
    "free": ("POST", "/free", lambda c: c.free()),
    "view": ("GET", "/view?filename=x.png&type=output", lambda c: c.view("x.png")),
}


@pytest.mark.parametrize("call", sorted(_CALLS))
async def test_500_text_plain_is_unavailable(comfy_for: Any, trouble: Any, call: str) -> None:
    method, path, invoke = _CALLS[call]
    comfy, _ = comfy_for(trouble(method, path))

    with pytest.raises(ComfyUnavailable) as caught:
        await invoke(comfy)

    assert caught.value.status_code == 500
    assert "Server got itself in trouble" in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_unavailable() -> None:
    async with ComfyClient(f"http://127.0.0.1:{_closed_port()}") as comfy:
        with pytest.raises(ComfyUnavailable) as caught:
            await comfy.get_queue()

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.status_code is None


async def test_read_timeout_is_unavailable() -> None:
    handled = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection without replying until the client leaves
        writer.close()
        await writer.wait_closed()
        handled.set()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with ComfyClient(f"http://127.0.0.1:{port}", timeout=0.2) as comfy:
            with pytest.raises(ComfyUnavailable) as caught:
                await comfy.system_stats()
        await asyncio.wait_for(handled.wait(), 5)

    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.PoolTimeout("busy"),
    ],
)
async def test_transport_errors_are_unavailable(error: httpx.HTTPError) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async with ComfyClient("http://comfy.test", transport=httpx.MockTransport(fail)) as comfy:
        with pytest.raises(ComfyUnavailable) as caught:
            await comfy.get_prompt_info()

    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, "<html>not json</html>", "text/html"),
        (200, {"queue_running": "nope"}, "application/json"),
        (200, {"queue_running": [[1, "only two"]]}, "application/json"),
        (200, ["a", "list"], "application/json"),
        (302, "", ""),
    ],
)
async def test_unexpected_queue_answers_are_protocol_errors(
    comfy_for: Any, synthetic: Synthetic, status: int, body: Any, content_type: str
) -> None:
    comfy, _ = comfy_for(synthetic("GET", "/queue", status, body, content_type=content_type))

    with pytest.raises(ComfyProtocolError):
        await comfy.get_queue()


async def test_history_answer_for_another_id_is_protocol_error(
    comfy_for: Any, synthetic: Synthetic
) -> None:
    comfy, _ = comfy_for(synthetic("GET", "/history/p", 200, {"other": {}}))

    with pytest.raises(ComfyProtocolError):
        await comfy.get_history("p")


def test_exception_tree() -> None:
    assert issubclass(ComfyUnavailable, ComfyError)
    assert issubclass(ComfyProtocolError, ComfyError)
    assert issubclass(ComfyRequestError, ComfyError)
    assert issubclass(PromptRejected, ComfyRequestError)
    assert issubclass(ComfyNotFound, ComfyRequestError)
    assert not issubclass(ComfyUnavailable, ComfyRequestError)


# --- lifecycle ---------------------------------------------------------------------------------


async def test_injected_http_client_is_not_closed() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    async with ComfyClient("http://comfy.test", http=http):
        pass

    assert not http.is_closed
    await http.aclose()


async def test_owned_http_client_is_closed() -> None:
    comfy = ComfyClient(
        "http://comfy.test", transport=httpx.MockTransport(lambda r: httpx.Response(200))
    )
    await comfy.aclose()

    with pytest.raises(RuntimeError, match="closed"):
        await comfy.get_queue()


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="http"):
        ComfyClient("comfy.test:8188")
    with pytest.raises(ValueError, match="either"):
        ComfyClient(
            "http://comfy.test",
            http=httpx.AsyncClient(),
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        )


def test_request_bodies_are_json_serialisable() -> None:
    # The capture bodies double as our request bodies; guard against non-JSON test data.
    for name in PROMPT_OK + PROMPT_400:
        json.dumps(_request_body(name))
