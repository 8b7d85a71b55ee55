"""ComfyUI WebSocket messages as typed events. Pure: parsing only, no I/O.

Text frames are ``{"type": ..., "data": {...}}``; each known type has a model below and any
other type (custom nodes send their own) becomes :class:`Unknown`. Binary frames start with a
big-endian uint32 event type (see :func:`parse_binary_frame`). :class:`Connected` and
:class:`Disconnected` are not sent by ComfyUI: the listener emits them around each connection.
"""

from __future__ import annotations

import json
import struct
from typing import Any, ClassVar, cast

from pydantic import BaseModel, Field, ValidationError, model_validator

from comfy_shared.comfyui.common import ComfyModel, LogEntry, OutputFile, TerminalSize, output_files
from comfy_shared.comfyui.errors import ComfyProtocolError


class ComfyEvent(ComfyModel):
    """Base of the events parsed from JSON frames; ``TYPE`` is the wire ``type``."""

    TYPE: ClassVar[str] = ""


class Status(ComfyEvent):
    """Queue size (pending + running). Only the greeting on connect carries ``sid``."""

    TYPE: ClassVar[str] = "status"
    queue_remaining: int
    sid: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        # Wire shape: {"status": {"exec_info": {"queue_remaining": N}}, "sid": "..."}
        if isinstance(data, dict) and isinstance(data.get("status"), dict):
            exec_info = data["status"].get("exec_info")
            flat = dict(exec_info) if isinstance(exec_info, dict) else {}
            return {**flat, "sid": data.get("sid")}
        return data


class ExecutionStart(ComfyEvent):
    TYPE: ClassVar[str] = "execution_start"
    prompt_id: str
    timestamp: int | None = None


class ExecutionCached(ComfyEvent):
    """Nodes whose outputs came from the cache; they get no ``executing`` event."""

    TYPE: ClassVar[str] = "execution_cached"
    prompt_id: str
    nodes: list[str] = Field(default_factory=list)
    timestamp: int | None = None


class Executing(ComfyEvent):
    """A node is about to run; ``node is None`` means the prompt is finished.

    The "finished" form comes after the history entry is written, so it is the safe moment to
    read ``/history``. ``prompt_id`` is missing in the replay sent right after a reconnect.
    """

    TYPE: ClassVar[str] = "executing"
    node: str | None
    display_node: str | None = None
    prompt_id: str | None = None

    @property
    def done(self) -> bool:
        return self.node is None


class Progress(ComfyEvent):
    TYPE: ClassVar[str] = "progress"
    value: float
    max: float
    prompt_id: str | None = None
    node: str | None = None


class NodeProgress(ComfyModel):
    value: float
    max: float
    state: str
    node_id: str
    prompt_id: str | None = None
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None


class ProgressState(ComfyEvent):
    """Every non-pending node of the prompt so far; ``state`` is "running" or "finished"."""

    TYPE: ClassVar[str] = "progress_state"
    prompt_id: str
    nodes: dict[str, NodeProgress] = Field(default_factory=dict)


class Executed(ComfyEvent):
    """A node returned UI output (``output`` may be None for a cached output node)."""

    TYPE: ClassVar[str] = "executed"
    node: str
    prompt_id: str
    display_node: str | None = None
    output: dict[str, Any] | None = None

    def files(self) -> list[OutputFile]:
        return output_files({self.node: self.output})


class ExecutionSuccess(ComfyEvent):
    """Sent slightly before the history entry exists: wait for ``Executing(node=None)``."""

    TYPE: ClassVar[str] = "execution_success"
    prompt_id: str
    timestamp: int | None = None


class ExecutionError(ComfyEvent):
    """A node raised. ``exception_type`` "ExecutionBlocked" (no timestamp) is not fatal."""

    TYPE: ClassVar[str] = "execution_error"
    prompt_id: str
    node_id: str
    node_type: str
    exception_type: str
    exception_message: str
    traceback: list[str] = Field(default_factory=list)
    executed: list[str] = Field(default_factory=list)
    current_inputs: Any = None
    current_outputs: Any = None
    timestamp: int | None = None


class ExecutionInterrupted(ComfyEvent):
    TYPE: ClassVar[str] = "execution_interrupted"
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = Field(default_factory=list)
    timestamp: int | None = None


class Logs(ComfyEvent):
    """New stdout/stderr chunks, for sockets subscribed via PATCH /internal/logs/subscribe."""

    TYPE: ClassVar[str] = "logs"
    entries: list[LogEntry] = Field(default_factory=list)
    size: TerminalSize | None = None


class FeatureFlags(ComfyEvent):
    """The server's flags, sent in reply to the client's own feature_flags frame."""

    TYPE: ClassVar[str] = "feature_flags"
    flags: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        # The flags are the whole data object; keep them together under one field.
        return {"flags": data} if isinstance(data, dict) and "flags" not in data else data


class Unknown(ComfyEvent):
    """A JSON message of a type this module does not know (e.g. from a custom node)."""

    type: str
    data: Any = None


# --- binary frames (§3.4 of the protocol notes) ---------------------------------------------

PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

_IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}


class PreviewImage(ComfyModel):
    """A sampler preview. ``image_format`` 1 = JPEG, 2 = PNG."""

    image_format: int
    image: bytes

    @property
    def mime_type(self) -> str:
        return _IMAGE_FORMATS.get(self.image_format, "application/octet-stream")


class PreviewImageWithMetadata(ComfyModel):
    """A preview sent to sockets that announced ``supports_preview_metadata``."""

    metadata: dict[str, Any]
    image: bytes

    @property
    def prompt_id(self) -> str | None:
        value = self.metadata.get("prompt_id")
        return value if isinstance(value, str) else None

    @property
    def node_id(self) -> str | None:
        value = self.metadata.get("node_id")
        return value if isinstance(value, str) else None

    @property
    def mime_type(self) -> str:
        return str(self.metadata.get("image_type") or "application/octet-stream")


class ProgressText(ComfyModel):
    """Text a node sent for display (broadcast by default, e.g. GetImageSize)."""

    node_id: str
    text: str


class UnknownBinary(ComfyModel):
    event_type: int
    payload: bytes


# --- listener events -----------------------------------------------------------------------


class Connected(BaseModel, frozen=True):
    """A (re)connection succeeded. Anything sent while disconnected is lost: reconcile state
    from ``/queue`` and ``/history``."""

    client_id: str
    connection_number: int


class Disconnected(BaseModel, frozen=True):
    """The connection ended; a reconnect follows after a backoff delay."""

    reason: str


Event = (
    Status
    | ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | ProgressState
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | Logs
    | FeatureFlags
    | Unknown
    | PreviewImage
    | PreviewImageWithMetadata
    | ProgressText
    | UnknownBinary
)
ListenerEvent = Event | Connected | Disconnected

_TEXT_EVENTS: dict[str, type[ComfyEvent]] = {
    cls.TYPE: cls
    for cls in (
        Status,
        ExecutionStart,
        ExecutionCached,
        Executing,
        Progress,
        ProgressState,
        Executed,
        ExecutionSuccess,
        ExecutionError,
        ExecutionInterrupted,
        Logs,
        FeatureFlags,
    )
}


def parse_message(event_type: str, data: Any) -> Event:
    """One ``(type, data)`` pair, as in a text frame or a history ``status.messages`` item."""
    cls = _TEXT_EVENTS.get(event_type)
    if cls is None:
        return Unknown(type=event_type, data=data)
    try:
        # Every class in _TEXT_EVENTS is a member of the Event union.
        return cast("Event", cls.model_validate(data))
    except ValidationError as exc:
        raise ComfyProtocolError(f"malformed {event_type!r} message: {exc}") from exc


def parse_text_frame(text: str | bytes) -> Event:
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ComfyProtocolError(f"websocket text frame is not JSON: {text[:200]!r}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ComfyProtocolError(f"websocket message without a type: {str(message)[:200]}")
    return parse_message(message["type"], message.get("data"))


def parse_binary_frame(frame: bytes) -> Event:
    event_type, payload = _split_u32(frame, "binary frame")
    if event_type == PREVIEW_IMAGE:
        image_format, image = _split_u32(payload, "preview image")
        return PreviewImage(image_format=image_format, image=image)
    if event_type == TEXT:
        node_id, text = _split_sized(payload, "text frame")
        return ProgressText(
            node_id=node_id.decode(errors="replace"), text=text.decode(errors="replace")
        )
    if event_type == PREVIEW_IMAGE_WITH_METADATA:
        return _preview_with_metadata(payload)
    return UnknownBinary(event_type=event_type, payload=payload)


def parse_frame(frame: str | bytes) -> Event:
    """Any frame as received by ``websockets`` (``str`` for text, ``bytes`` for binary)."""
    return parse_text_frame(frame) if isinstance(frame, str) else parse_binary_frame(frame)


def _preview_with_metadata(payload: bytes) -> PreviewImageWithMetadata:
    raw_metadata, image = _split_sized(payload, "preview metadata")
    try:
        metadata = json.loads(raw_metadata)
    except ValueError as exc:
        raise ComfyProtocolError("preview metadata is not JSON") from exc
    if not isinstance(metadata, dict):
        raise ComfyProtocolError("preview metadata is not an object")
    return PreviewImageWithMetadata(metadata=metadata, image=image)


def _split_u32(data: bytes, what: str) -> tuple[int, bytes]:
    if len(data) < 4:
        raise ComfyProtocolError(f"{what} shorter than 4 bytes")
    (value,) = struct.unpack_from(">I", data)
    return value, data[4:]


def _split_sized(data: bytes, what: str) -> tuple[bytes, bytes]:
    """A uint32 length N, N bytes, then the rest."""
    size, rest = _split_u32(data, what)
    if len(rest) < size:
        raise ComfyProtocolError(f"{what}: declared {size} bytes, got {len(rest)}")
    return rest[:size], rest[size:]
