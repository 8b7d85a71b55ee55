"""A client's outbox: bounded, previews given up first, a client that falls behind closed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from comfy_balancer.gateway import relay_messages as messages
from comfy_balancer.gateway.relay import ORIGIN_HEAD_BYTES, client_id_in
from comfy_balancer.gateway.ws_socket import ClientSocket
from comfy_shared.models import ErrorType, PromptOrigin, TaskError, TaskRecord
from comfy_shared.task_state import TaskStatus
from comfy_testkit.waiting import wait_for_condition


class Collected:
    """Stands in for the WebSocket a ClientSocket writes to."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(text)

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(data)


ENDED_AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_previews_are_dropped_from_half_full_and_the_client_is_closed_when_full() -> None:
    socket = ClientSocket("acme", "tab", queue_frames=4)
    socket.wants_metadata = True
    socket.send_preview(b"type 4", b"type 1")
    socket.send("a")
    socket.send_preview(b"type 4", b"type 1")  # half full: this preview is dropped

    assert (socket.queued, socket.previews_dropped) == (2, 1)
    socket.send("b")
    socket.send("c")
    assert not socket.kicked.is_set()
    socket.send("d")  # one more than it may hold

    assert socket.kicked.is_set()
    assert socket.queued == 0  # nothing more is kept (or sent) for it
    socket.send("e")
    assert socket.queued == 0


def test_a_client_gets_previews_in_the_form_it_announced() -> None:
    modern, legacy = ClientSocket("acme", "tab"), ClientSocket("acme", "tab")
    modern.wants_metadata = True
    for socket in (modern, legacy):
        socket.send_preview(b"type 4", b"type 1")
        socket.send_preview(b"type 4", None)  # a media type type 1 cannot name

    assert (modern.queued, legacy.queued) == (2, 1)


async def test_a_queue_notice_waiting_to_be_sent_gives_way_to_the_next_but_never_jumps_ahead() -> (
    None
):
    socket = ClientSocket("acme", "tab")
    sent = Collected()
    socket.send_status("greeting")
    for count in range(50):  # fifty prompts start at once: one notice, the newest
        socket.send_queue_notice(f"queue {count}")
    socket.send("execution_success")
    socket.send_status("queue 0")  # in the client's own prompt's end
    socket.send_queue_notice("queue 1")  # later news: after it, not in the old notice's place
    socket.send("executing null")

    writer = asyncio.create_task(socket.write_to(cast(Any, sent)))
    await wait_for_condition(lambda: _sent(sent, 6), timeout_s=5, what="everything")
    writer.cancel()

    assert sent.frames == [
        "greeting", "queue 49", "execution_success", "queue 0", "queue 1", "executing null",
    ]  # fmt: skip


async def _sent(collected: Collected, count: int) -> bool:
    return len(collected.frames) >= count


def record(status: TaskStatus, error: TaskError | None = None) -> TaskRecord:
    return TaskRecord(id="p1", status=status, finished_at=ENDED_AT, error=error)


@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        (
            record(TaskStatus.SUCCEEDED),
            {"type": "execution_success", "data": {"prompt_id": "p1", "timestamp": 1796040000000}},
        ),
        (
            record(TaskStatus.CANCELLED),
            {
                "type": "execution_interrupted",
                "data": {
                    "prompt_id": "p1", "node_id": "3", "node_type": "KSampler",
                    "executed": ["1", "2"], "timestamp": 1796040000000,
                },
            },
        ),
        (
            record(TaskStatus.FAILED, TaskError(type=ErrorType.SERVICE, message="node n1 lost")),
            {
                "type": "execution_error",
                "data": {
                    "prompt_id": "p1", "node_id": "3", "node_type": "KSampler",
                    "executed": ["1", "2"], "exception_message": "node n1 lost",
                    "exception_type": "comfy_stack.ServiceError", "traceback": [],
                    "current_inputs": {}, "current_outputs": [], "timestamp": 1796040000000,
                },
            },
        ),
    ],
)  # fmt: skip
def test_an_end_comfyui_never_announced_is_told_in_its_words(
    ended: TaskRecord, expected: dict[str, object]
) -> None:
    made = messages.ending(ended, node="3", node_type="KSampler", executed=["1", "2"])

    assert json.loads(made) == expected


def test_an_error_comfyui_described_keeps_its_description() -> None:
    details = {
        "node_id": "2", "node_type": "ImageToMask", "exception_type": "IndexError",
        "exception_message": "index 3", "traceback": ["line"], "executed": ["1"],
    }  # fmt: skip
    failed = record(
        TaskStatus.FAILED, TaskError(type=ErrorType.COMFYUI, message="x", details=details)
    )

    data = json.loads(messages.ending(failed, node=None, node_type=None, executed=[]))["data"]

    assert {key: data[key] for key in details} == details


@pytest.mark.parametrize(
    ("client_id", "read"),
    [("tab-1", True), ('a "quoted" \\ id', True), (None, True), ("x" * 600, False)],
)
def test_a_prompt_s_client_is_read_from_the_head_of_its_origin(
    client_id: str | None, read: bool
) -> None:
    workflow = {"extra_pnginfo": {"workflow": {"nodes": ["..."] * 10_000}}}
    stored = PromptOrigin(client_id=client_id, number=7, extra_data=workflow).model_dump_json()

    assert client_id_in(stored[:ORIGIN_HEAD_BYTES]) == (read, client_id if read else None)
    assert client_id_in("") == (True, None)  # no origin: not a gateway prompt
