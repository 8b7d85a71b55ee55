import json
import struct

import pytest

from comfy_shared.comfyui import PreviewImage, PreviewImageWithMetadata, ProgressText
from comfy_shared.comfyui.events import parse_binary_frame
from comfy_shared.frames import (
    MessageFrame,
    PreviewFrame,
    StoredFrame,
    TextFrame,
    from_fields,
    preview_frame,
    preview_with_metadata_frame,
    text_frame,
    to_fields,
)

JPEG = b"\xff\xd8\xff\xe0 some jpeg \x00\x01\xff"
METADATA = {"node_id": "3", "prompt_id": "task-1", "image_type": "image/jpeg"}


@pytest.mark.parametrize(
    "frame",
    [
        MessageFrame(2, 1_795_320_942_926.5, '{"type": "executing", "data": {"node": "3"}}'),
        PreviewFrame(1, 1.0, METADATA, JPEG),
        TextFrame(3, 2.25, "4", "width: 40, height: 30\n batch size: 2"),
    ],
)
def test_a_frame_survives_its_stream_entry(frame: StoredFrame) -> None:
    fields = to_fields(frame)

    assert all(isinstance(value, str) for value in fields.values())  # decode_responses clients
    assert from_fields(fields) == frame


@pytest.mark.parametrize(
    "fields",
    [
        {"a": "1", "r": "1", "k": "z", "d": "a kind added later"},
        {"a": "1", "r": "1", "k": "p", "d": "{}", "b": "not base64!"},
        {"a": "1", "r": "1", "k": "p", "d": "not json", "b": ""},
        {"a": "x", "r": "1", "k": "m", "d": "{}"},
        {"r": "1", "k": "m", "d": "{}"},
    ],
)
def test_an_entry_that_cannot_be_read_is_none(fields: dict[str, str]) -> None:
    assert from_fields(fields) is None


def test_binary_frames_use_comfyui_s_layouts() -> None:
    with_metadata = parse_binary_frame(preview_with_metadata_frame(METADATA, JPEG))
    plain = parse_binary_frame(preview_frame("image/png", JPEG) or b"")
    text = parse_binary_frame(text_frame("12", "héllo"))

    assert with_metadata == PreviewImageWithMetadata(metadata=METADATA, image=JPEG)
    assert plain == PreviewImage(image_format=2, image=JPEG)
    assert text == ProgressText(node_id="12", text="héllo")
    assert preview_frame("image/jpeg", JPEG) == struct.pack(">II", 1, 1) + JPEG
    assert preview_frame("image/webp", JPEG) is None  # type 1 has no word for it
    assert json.loads(preview_with_metadata_frame(METADATA, b"")[8:]) == METADATA
