"""Parsing of WebSocket frames: every recorded message, and binary frames per the protocol."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from comfy_shared.comfyui import (
    ComfyProtocolError,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    FeatureFlags,
    Logs,
    OutputFile,
    PreviewImage,
    PreviewImageWithMetadata,
    Progress,
    ProgressState,
    ProgressText,
    Status,
    Unknown,
    UnknownBinary,
    parse_binary_frame,
    parse_frame,
    parse_message,
    parse_text_frame,
)
from comfy_testkit.captures import load_ws_transcripts

EXPECTED_CLASS: dict[str, type[Any]] = {
    "status": Status,
    "execution_start": ExecutionStart,
    "execution_cached": ExecutionCached,
    "executing": Executing,
    "progress": Progress,
    "progress_state": ProgressState,
    "executed": Executed,
    "execution_success": ExecutionSuccess,
    "execution_error": ExecutionError,
    "execution_interrupted": ExecutionInterrupted,
    "logs": Logs,
    "feature_flags": FeatureFlags,
}

TRANSCRIPTS = {k: v for k, v in load_ws_transcripts().items() if isinstance(v, dict)}


@pytest.mark.parametrize("scenario", sorted(TRANSCRIPTS))
def test_every_recorded_message_parses_to_its_type(scenario: str) -> None:
    for message in TRANSCRIPTS[scenario]["messages"]:
        event = parse_text_frame(json.dumps(message))

        assert type(event) is EXPECTED_CLASS[message["type"]], message


@pytest.mark.parametrize("scenario", sorted(TRANSCRIPTS))
def test_every_transcript_starts_with_greeting_and_ends_with_done(scenario: str) -> None:
    transcript = TRANSCRIPTS[scenario]
    events = [parse_message(m["type"], m["data"]) for m in transcript["messages"]]

    greeting, last = events[0], events[-1]
    assert isinstance(greeting, Status)
    assert greeting.sid == transcript["client_id"]
    assert isinstance(last, Executing)
    assert last.done
    assert all(isinstance(e, Status) and e.sid is None for e in events[1:] if isinstance(e, Status))


def _first(scenario: str, cls: type[Any]) -> Any:
    for message in TRANSCRIPTS[scenario]["messages"]:
        event = parse_message(message["type"], message["data"])
        if isinstance(event, cls):
            return event
    raise AssertionError(f"no {cls.__name__} in {scenario}")


def test_status_fields() -> None:
    status = _first("success", Status)

    assert (status.queue_remaining, status.sid) == (0, "fixture-client-bc0405d1")


def test_executing_node_and_done() -> None:
    executing = _first("success", Executing)

    assert (executing.node, executing.display_node, executing.done) == ("1", "1", False)
    assert executing.prompt_id == TRANSCRIPTS["success"]["prompt_id"]


def test_executing_replayed_after_reconnect_has_no_prompt_id() -> None:
    event = parse_message("executing", {"node": "5"})

    assert isinstance(event, Executing)
    assert (event.node, event.prompt_id, event.done) == ("5", None, False)


def test_executed_lists_its_files() -> None:
    executed = _first("success_all_cached", Executed)

    assert executed.files() == [
        OutputFile(node_id="3", kind="images", filename="fixture_minimal_00001_.png")
    ]


def test_executed_with_null_output_has_no_files() -> None:
    event = parse_message("executed", {"node": "3", "prompt_id": "p", "output": None})

    assert isinstance(event, Executed)
    assert event.files() == []


def test_execution_cached_nodes() -> None:
    cached = _first("success_all_cached", ExecutionCached)

    assert cached.nodes == ["1", "2", "3"]


def test_progress_state_nodes() -> None:
    state = _first("success", ProgressState)

    node = state.nodes["1"]
    assert (node.state, node.value, node.max, node.real_node_id) == ("running", 0.0, 1.0, "1")


def test_execution_error_fields() -> None:
    error = _first("execution_error", ExecutionError)

    assert (error.node_id, error.node_type, error.exception_type) == (
        "2",
        "ImageToMask",
        "IndexError",
    )
    assert error.exception_message.startswith("index 3 is out of bounds")
    assert error.executed == ["1"]
    assert error.traceback
    assert all(isinstance(line, str) for line in error.traceback)
    assert error.timestamp is not None


def test_execution_blocked_error_without_timestamp() -> None:
    data = {
        "prompt_id": "p",
        "node_id": "4",
        "node_type": "X",
        "exception_type": "ExecutionBlocked",
        "exception_message": "blocked",
        "executed": [],
        "current_inputs": [],
    }

    event = parse_message("execution_error", data)

    assert isinstance(event, ExecutionError)
    assert event.timestamp is None


def test_execution_interrupted_fields() -> None:
    interrupted = _first("interrupted", ExecutionInterrupted)

    assert (interrupted.node_id, interrupted.node_type) == ("12", "ImageBlur")
    assert sorted(interrupted.executed) == ["1", "10", "11"]


def test_progress() -> None:
    event = parse_message("progress", {"value": 5, "max": 20, "prompt_id": "p", "node": "3"})

    assert event == Progress(value=5, max=20, prompt_id="p", node="3")


def test_logs() -> None:
    data = {"entries": [{"t": "2026-01-01T00:00:00", "m": "Prompt executed\n"}], "size": None}

    event = parse_message("logs", data)

    assert isinstance(event, Logs)
    assert event.entries[0].m == "Prompt executed\n"
    assert event.size is None


def test_feature_flags_keep_every_flag() -> None:
    data = {
        "supports_preview_metadata": True,
        "max_upload_size": 104857600,
        "extension": {"manager": {"supports_v4": True}},
    }

    event = parse_message("feature_flags", data)

    assert isinstance(event, FeatureFlags)
    assert event.flags == data


def test_custom_node_message_is_unknown() -> None:
    event = parse_text_frame(json.dumps({"type": "crystools.monitor", "data": {"cpu": 3}}))

    assert event == Unknown(type="crystools.monitor", data={"cpu": 3})


def test_known_type_with_extra_keys_is_tolerated() -> None:
    event = parse_message("execution_start", {"prompt_id": "p", "timestamp": 1, "new_key": 2})

    assert isinstance(event, ExecutionStart)
    assert event.model_extra == {"new_key": 2}


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"data": {}}',
        '{"type": "status", "data": {"status": {"exec_info": {}}}}',
        '{"type": "executing", "data": null}',
        '{"type": "status", "data": {"status": {"exec_info": [1]}}}',
    ],
)
def test_malformed_text_frames_raise_protocol_error(frame: str) -> None:
    with pytest.raises(ComfyProtocolError):
        parse_text_frame(frame)


# --- binary frames -----------------------------------------------------------------------------


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


@pytest.mark.parametrize(("image_format", "mime"), [(1, "image/jpeg"), (2, "image/png")])
def test_preview_image(image_format: int, mime: str) -> None:
    event = parse_frame(_u32(1) + _u32(image_format) + b"\xff\xd8image")

    assert event == PreviewImage(image_format=image_format, image=b"\xff\xd8image")
    assert isinstance(event, PreviewImage)
    assert event.mime_type == mime


def test_text_frame_as_observed() -> None:
    frame = _u32(3) + _u32(1) + b"4" + b"width: 40, height: 30\n batch size: 2"

    assert parse_binary_frame(frame) == ProgressText(
        node_id="4", text="width: 40, height: 30\n batch size: 2"
    )


def test_preview_image_with_metadata() -> None:
    metadata = {
        "node_id": "7",
        "prompt_id": "p",
        "display_node_id": "7",
        "parent_node_id": None,
        "real_node_id": "7",
        "image_type": "image/png",
    }
    raw = json.dumps(metadata).encode()

    event = parse_binary_frame(_u32(4) + _u32(len(raw)) + raw + b"\x89PNG")

    assert isinstance(event, PreviewImageWithMetadata)
    assert (event.node_id, event.prompt_id, event.mime_type) == ("7", "p", "image/png")
    assert event.image == b"\x89PNG"


def test_text_frame_with_invalid_utf8_is_replaced_not_fatal() -> None:
    event = parse_binary_frame(_u32(3) + _u32(1) + b"\xff" + b"ok \xfe")

    assert event == ProgressText(node_id="\ufffd", text="ok \ufffd")


def test_unknown_binary_type() -> None:
    assert parse_binary_frame(_u32(99) + b"abc") == UnknownBinary(event_type=99, payload=b"abc")


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00\x01",
        _u32(1) + b"\x00",
        _u32(3) + _u32(10) + b"short",
        _u32(4) + _u32(3) + b"{x}" + b"img",
        _u32(4) + _u32(2) + b"[]",
    ],
)
def test_malformed_binary_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ComfyProtocolError):
        parse_binary_frame(frame)
