"""ComfyUI frames of a gateway prompt, as its node stores them and the balancer relays them.

A node's service follows its ComfyUI's WebSocket; every message about a prompt sent through
the ComfyUI gateway (a task with a ``PromptOrigin``) is appended to the task's frames stream
(``{p}:task:{id}:frames``, through ``TaskStore.append_frames``), with the node's prompt id
replaced by the task id. The balancer relays the stream to the prompt's own client, whichever
node ran it. One stream entry per frame, its fields strings:

====  =========================================================================================
a     the attempt (placement) that ran it: the relay drops the frames of a superseded attempt
r     when the service received it from ComfyUI, ms since the epoch (for latency figures)
k     ``m`` a JSON message, ``p`` a preview image (binary type 4), ``t`` a text (binary type 3)
d     m: the message (``{"type", "data"}`` JSON); p: the preview's metadata JSON; t: the node id
b     p: the image bytes, base64; t: the text
====  =========================================================================================

The binary frames a client receives are rebuilt from these with :func:`preview_frame`,
:func:`preview_with_metadata_frame` and :func:`text_frame` (ComfyUI's layouts: a big-endian
u32 event type, then the payload).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from comfy_shared.comfyui.events import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, TEXT

MESSAGE: Final = "m"
PREVIEW: Final = "p"
PROGRESS_TEXT: Final = "t"

IMAGE_FORMATS: Final = {"image/jpeg": 1, "image/png": 2}
"""The image format word of a type-1 preview, by media type."""


@dataclass(frozen=True, slots=True)
class MessageFrame:
    """A JSON message, as ComfyUI sent it (prompt id replaced)."""

    attempt: int
    received_ms: float
    text: str


@dataclass(frozen=True, slots=True)
class PreviewFrame:
    """A preview image and its metadata (``node_id``, ``prompt_id``, ``image_type``...)."""

    attempt: int
    received_ms: float
    metadata: dict[str, Any]
    image: bytes


@dataclass(frozen=True, slots=True)
class TextFrame:
    """Text a node sent for display (ComfyUI's ``send_progress_text``)."""

    attempt: int
    received_ms: float
    node_id: str
    text: str


StoredFrame = MessageFrame | PreviewFrame | TextFrame


def to_fields(frame: StoredFrame) -> dict[str, str]:
    """The stream entry of a frame."""
    head = {"a": str(frame.attempt), "r": f"{frame.received_ms:.3f}"}
    if isinstance(frame, MessageFrame):
        return head | {"k": MESSAGE, "d": frame.text}
    if isinstance(frame, PreviewFrame):
        image = base64.b64encode(frame.image).decode()
        return head | {"k": PREVIEW, "d": json.dumps(frame.metadata), "b": image}
    return head | {"k": PROGRESS_TEXT, "d": frame.node_id, "b": frame.text}


def from_fields(fields: Mapping[str, str]) -> StoredFrame | None:
    """The frame of a stream entry; None for an entry this code cannot read (a kind added
    later, or a damaged one): the relay skips it rather than stop."""
    try:
        attempt, received_ms, kind = int(fields["a"]), float(fields["r"]), fields["k"]
        if kind == MESSAGE:
            return MessageFrame(attempt, received_ms, fields["d"])
        if kind == PREVIEW:
            metadata = json.loads(fields["d"])
            image = base64.b64decode(fields["b"], validate=True)
            return PreviewFrame(attempt, received_ms, metadata, image)
        if kind == PROGRESS_TEXT:
            return TextFrame(attempt, received_ms, fields["d"], fields["b"])
    except (KeyError, ValueError, binascii.Error):
        return None
    return None


def preview_with_metadata_frame(metadata: Mapping[str, Any], image: bytes) -> bytes:
    """Binary type 4 (PREVIEW_IMAGE_WITH_METADATA): u32 N, N bytes of JSON, the image."""
    encoded = json.dumps(dict(metadata)).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(encoded)) + encoded + image


def preview_frame(media_type: str, image: bytes) -> bytes | None:
    """Binary type 1 (PREVIEW_IMAGE): u32 format (1 JPEG, 2 PNG), the image; None for a
    media type that layout cannot name."""
    image_format = IMAGE_FORMATS.get(media_type)
    if image_format is None:
        return None
    return struct.pack(">II", PREVIEW_IMAGE, image_format) + image


def text_frame(node_id: str, text: str) -> bytes:
    """Binary type 3 (TEXT): u32 N, N bytes of node id, the UTF-8 text."""
    node = node_id.encode()
    return struct.pack(">II", TEXT, len(node)) + node + text.encode()
