"""FrameRecorder: what ComfyUI says about gateway prompts, kept in their tasks' frames streams.
Real Redis, real task store and followed prompts; the frames are the recorded messages of a
real ComfyUI prompt."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from comfy_service.frames import FrameRecorder
from comfy_service.prompts import FollowedPrompts
from comfy_shared.comfyui import parse_frame
from comfy_shared.frames import (
    MessageFrame,
    PreviewFrame,
    StoredFrame,
    TextFrame,
    from_fields,
    preview_with_metadata_frame,
    text_frame,
)
from comfy_shared.loops import LoopHandle
from comfy_shared.models import PromptOrigin, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore
from comfy_testkit.captures import load_ws_transcripts
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys("frames-test")
NODE = "node-f"
TRANSCRIPT = load_ws_transcripts()["success"]
PROMPT_ID = TRANSCRIPT["prompt_id"]
TASK_ID = "gw-task-1"
JPEG = b"\xff\xd8\xff\xe0jpeg"


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS, retention_s=600)


@pytest.fixture
def prompts(redis: Redis) -> FollowedPrompts:
    return FollowedPrompts(redis, KEYS, NODE)


@pytest.fixture
def recorder(store: TaskStore, prompts: FollowedPrompts, redis: Redis) -> FrameRecorder:
    return FrameRecorder(store=store, prompts=prompts, redis=redis, keys=KEYS)


@pytest.fixture
async def writing(recorder: FrameRecorder) -> AsyncIterator[None]:
    task = asyncio.create_task(recorder.run(LoopHandle("comfyui-frames")))
    yield
    task.cancel()
    await asyncio.wait([task])


async def follow(
    store: TaskStore,
    prompts: FollowedPrompts,
    task_id: str,
    prompt_id: str,
    *,
    gateway: bool,
    previews: bool = False,
) -> None:
    origin = PromptOrigin(client_id="tab-1", number=1) if gateway else None
    await store.create(TaskRecord(id=task_id, previews=previews), {"1": {}}, origin=origin)
    await prompts.add(prompts.prompt(prompt_id, task_id, attempt=2))


def offer(recorder: FrameRecorder, raw: str | bytes) -> None:
    recorder.offer(raw, parse_frame(raw))


async def stored(redis: Redis, task_id: str, count: int) -> list[StoredFrame]:
    key = KEYS.task_frames(task_id)

    async def written() -> bool:
        return await redis.xlen(key) >= count

    await wait_for_condition(written, timeout_s=5, what=f"{count} frames of {task_id}")
    entries = cast("list[tuple[str, dict[str, str]]]", await redis.xrange(key))
    frames = [from_fields(fields) for _, fields in entries]
    assert None not in frames
    return cast(list[StoredFrame], frames)


def preview(prompt_id: str, node: str, image: bytes = JPEG) -> bytes:
    metadata = {"node_id": node, "prompt_id": prompt_id, "image_type": "image/jpeg"}
    return preview_with_metadata_frame(metadata, image)


@pytest.mark.usefixtures("writing")
async def test_a_gateway_prompt_s_frames_are_kept_in_order_as_the_task_s(
    recorder: FrameRecorder, store: TaskStore, prompts: FollowedPrompts, redis: Redis
) -> None:
    await follow(store, prompts, TASK_ID, PROMPT_ID, gateway=True)
    sent: list[str | bytes] = [json.dumps(message) for message in TRANSCRIPT["messages"]]
    # While node "2" runs: a text (ComfyUI broadcasts them, naming no prompt) and a preview.
    running_node_2 = next(i for i, m in enumerate(sent) if '"node": "2"' in str(m)) + 1
    sent[running_node_2:running_node_2] = [text_frame("2", "width: 40"), preview(PROMPT_ID, "2")]
    for raw in sent:
        offer(recorder, raw)

    kept = await stored(redis, TASK_ID, len(sent) - 4)  # not the node's four status frames

    expected_types = [m["type"] for m in TRANSCRIPT["messages"] if m["type"] != "status"]
    messages = [json.loads(frame.text) for frame in kept if isinstance(frame, MessageFrame)]
    assert [message["type"] for message in messages] == expected_types
    assert all(frame.attempt == 2 for frame in kept)
    assert PROMPT_ID not in json.dumps(messages)  # the node's prompt id, everywhere replaced
    assert all(message["data"]["prompt_id"] == TASK_ID for message in messages)
    progress_nodes = [
        n for m in messages if m["type"] == "progress_state" for n in m["data"]["nodes"].values()
    ]
    assert {node["prompt_id"] for node in progress_nodes} == {TASK_ID}
    assert messages[-1] == {"type": "executing", "data": {"node": None, "prompt_id": TASK_ID}}
    text, image = kept[running_node_2 - 3], kept[running_node_2 - 2]
    assert text == TextFrame(2, text.received_ms, "2", "width: 40")
    assert isinstance(image, PreviewFrame)
    assert (image.metadata["prompt_id"], image.metadata["node_id"], image.image) == (
        TASK_ID,
        "2",
        JPEG,
    )


@pytest.mark.usefixtures("writing")
async def test_only_followed_prompts_of_gateway_tasks_or_tasks_wanting_previews_are_kept(
    recorder: FrameRecorder, store: TaskStore, prompts: FollowedPrompts, redis: Redis
) -> None:
    await follow(store, prompts, "api-task", "p-api", gateway=False)
    await follow(store, prompts, "watched", "p-previews", gateway=False, previews=True)
    await follow(store, prompts, TASK_ID, "p-gw", gateway=True)
    for prompt_id in ("p-api", "p-unknown", "p-previews", "p-gw"):
        offer(recorder, _start(prompt_id))
    offer(recorder, preview("p-previews", "3"))

    kept = await stored(redis, TASK_ID, 1)
    watched = await stored(redis, "watched", 2)
    latest = await store.latest_preview("watched", attempt=2)

    assert len(kept) == 1
    assert isinstance(watched[1], PreviewFrame)
    assert latest is not None
    assert (latest.image, latest.metadata["prompt_id"]) == (JPEG, "watched")
    assert await store.latest_preview("watched", attempt=1) is None  # an earlier attempt's
    assert await redis.exists(KEYS.task_frames("api-task"), KEYS.task_frames("p-unknown")) == 0


async def test_a_waiting_preview_is_replaced_by_the_next_of_its_node(
    recorder: FrameRecorder, store: TaskStore, prompts: FollowedPrompts, redis: Redis
) -> None:
    await follow(store, prompts, TASK_ID, PROMPT_ID, gateway=True)
    offer(recorder, _start(PROMPT_ID))
    for step in range(3):
        offer(recorder, preview(PROMPT_ID, "3", b"step %d" % step))
        offer(recorder, _progress(PROMPT_ID, step))
    offer(recorder, preview(PROMPT_ID, "4", b"other node"))

    async with asyncio.timeout(5):
        writer = asyncio.create_task(recorder.run(LoopHandle("comfyui-frames")))
        try:
            kept = await stored(redis, TASK_ID, 6)
        finally:
            writer.cancel()

    images = [frame.image for frame in kept if isinstance(frame, PreviewFrame)]
    assert images == [b"step 2", b"other node"]
    assert [type(frame).__name__ for frame in kept] == [
        "MessageFrame", "PreviewFrame", "MessageFrame", "MessageFrame", "MessageFrame",
        "PreviewFrame",
    ]  # fmt: skip


@pytest.mark.usefixtures("writing")
async def test_frames_without_a_prompt_id_belong_to_the_prompt_running_then(
    recorder: FrameRecorder, store: TaskStore, prompts: FollowedPrompts, redis: Redis
) -> None:
    await follow(store, prompts, TASK_ID, PROMPT_ID, gateway=True)
    offer(recorder, text_frame("9", "before any prompt runs"))
    offer(recorder, _start(PROMPT_ID))
    offer(
        recorder, json.dumps({"type": "executing", "data": {"node": "5", "prompt_id": PROMPT_ID}})
    )
    offer(recorder, json.dumps({"type": "custom.pack.status", "data": {"busy": True}}))
    offer(recorder, struct.pack(">II", 1, 2) + b"png bytes")  # type 1: no metadata at all
    offer(
        recorder, json.dumps({"type": "executing", "data": {"node": None, "prompt_id": PROMPT_ID}})
    )
    offer(recorder, text_frame("9", "after the end"))
    offer(recorder, _start(PROMPT_ID))  # written in order: the texts before it were dropped

    kept = await stored(redis, TASK_ID, 6)

    assert [type(frame).__name__ for frame in kept] == [
        "MessageFrame", "MessageFrame", "MessageFrame", "PreviewFrame", "MessageFrame",
        "MessageFrame",
    ]  # fmt: skip
    custom, legacy_preview = kept[2], kept[3]
    assert isinstance(custom, MessageFrame)
    assert json.loads(custom.text)["type"] == "custom.pack.status"
    assert isinstance(legacy_preview, PreviewFrame)
    assert legacy_preview.metadata == _metadata("5", TASK_ID, "image/png")
    assert legacy_preview.image == b"png bytes"


def _start(prompt_id: str) -> str:
    return json.dumps({"type": "execution_start", "data": {"prompt_id": prompt_id, "timestamp": 1}})


def _progress(prompt_id: str, value: int) -> str:
    data = {"value": value, "max": 3, "prompt_id": prompt_id, "node": "3"}
    return json.dumps({"type": "progress", "data": data})


def _metadata(node: str, prompt_id: str, media_type: str) -> dict[str, Any]:
    return {
        "node_id": node,
        "display_node_id": node,
        "parent_node_id": None,
        "real_node_id": node,
        "prompt_id": prompt_id,
        "image_type": media_type,
    }
