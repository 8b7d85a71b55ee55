"""What kind of file an output is, from its name: one table for listing, serving and storing."""

from __future__ import annotations

from pathlib import PurePosixPath

from comfy_shared.models import OutputKind

_BY_SUFFIX: dict[str, tuple[OutputKind, str]] = {
    ".png": (OutputKind.IMAGE, "image/png"),
    ".jpg": (OutputKind.IMAGE, "image/jpeg"),
    ".jpeg": (OutputKind.IMAGE, "image/jpeg"),
    ".webp": (OutputKind.IMAGE, "image/webp"),
    ".bmp": (OutputKind.IMAGE, "image/bmp"),
    ".tif": (OutputKind.IMAGE, "image/tiff"),
    ".tiff": (OutputKind.IMAGE, "image/tiff"),
    ".gif": (OutputKind.VIDEO, "image/gif"),
    ".mp4": (OutputKind.VIDEO, "video/mp4"),
    ".webm": (OutputKind.VIDEO, "video/webm"),
    ".mov": (OutputKind.VIDEO, "video/quicktime"),
    ".mkv": (OutputKind.VIDEO, "video/x-matroska"),
    ".wav": (OutputKind.AUDIO, "audio/wav"),
    ".mp3": (OutputKind.AUDIO, "audio/mpeg"),
    ".flac": (OutputKind.AUDIO, "audio/flac"),
    ".ogg": (OutputKind.AUDIO, "audio/ogg"),
    ".opus": (OutputKind.AUDIO, "audio/opus"),
    ".m4a": (OutputKind.AUDIO, "audio/mp4"),
    ".txt": (OutputKind.OTHER, "text/plain; charset=utf-8"),
    ".json": (OutputKind.OTHER, "application/json"),
}
_UNKNOWN = (OutputKind.OTHER, "application/octet-stream")


def kind_of(filename: str) -> OutputKind:
    return _BY_SUFFIX.get(PurePosixPath(filename).suffix.lower(), _UNKNOWN)[0]


def media_type_of(filename: str) -> str:
    return _BY_SUFFIX.get(PurePosixPath(filename).suffix.lower(), _UNKNOWN)[1]
