"""What an output file is, from its name: its kind (image, video, audio, text, other) and
media type. A text a node reports (``comfy_shared.outputs.texts``) gets a ``.txt`` name, so it
is served exactly as a ``.txt`` file a node writes.

One explicit table instead of ``mimetypes``: the standard library's answers depend on the
machine (``/etc/mime.types``; a slim container knows neither ``.webp`` nor ``.flac``), and a
download must carry the same ``Content-Type`` wherever the service runs.

An image file that ComfyUI reports as animated (``"animated": [true]`` next to its entry, as
SaveAnimatedWEBP and SaveAnimatedPNG do) is a video to the caller, though still served as an
image type: that is what browsers play it as.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from comfy_shared.models import OutputKind

UNKNOWN_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Media:
    kind: OutputKind
    media_type: str


def _of(kind: OutputKind, media_type: str, *suffixes: str) -> dict[str, Media]:
    return dict.fromkeys(suffixes, Media(kind, media_type))


MEDIA_BY_SUFFIX: dict[str, Media] = {
    **_of(OutputKind.IMAGE, "image/png", ".png"),
    **_of(OutputKind.IMAGE, "image/jpeg", ".jpg", ".jpeg"),
    **_of(OutputKind.IMAGE, "image/webp", ".webp"),
    **_of(OutputKind.IMAGE, "image/bmp", ".bmp"),
    **_of(OutputKind.IMAGE, "image/tiff", ".tif", ".tiff"),
    # ComfyUI's GIF writers (e.g. VideoHelperSuite) save animations, so a GIF counts as video.
    **_of(OutputKind.VIDEO, "image/gif", ".gif"),
    **_of(OutputKind.VIDEO, "video/mp4", ".mp4"),
    **_of(OutputKind.VIDEO, "video/webm", ".webm"),
    **_of(OutputKind.VIDEO, "video/quicktime", ".mov"),
    **_of(OutputKind.VIDEO, "video/x-matroska", ".mkv"),
    **_of(OutputKind.VIDEO, "video/x-msvideo", ".avi"),
    **_of(OutputKind.AUDIO, "audio/wav", ".wav"),
    **_of(OutputKind.AUDIO, "audio/mpeg", ".mp3"),
    **_of(OutputKind.AUDIO, "audio/flac", ".flac"),
    **_of(OutputKind.AUDIO, "audio/ogg", ".ogg"),
    **_of(OutputKind.AUDIO, "audio/opus", ".opus"),
    **_of(OutputKind.AUDIO, "audio/mp4", ".m4a"),
    **_of(OutputKind.TEXT, "text/plain; charset=utf-8", ".txt"),
    **_of(OutputKind.OTHER, "application/json", ".json"),
}
_UNKNOWN = Media(OutputKind.OTHER, UNKNOWN_MEDIA_TYPE)


def media_of(filename: str) -> Media:
    """Kind and media type of a file name (case-insensitive suffix); unknown: other, octets."""
    return MEDIA_BY_SUFFIX.get(PurePosixPath(filename).suffix.lower(), _UNKNOWN)


def media_type_of(filename: str) -> str:
    """The ``Content-Type`` to serve a file under, e.g. ``"video/mp4"``."""
    return media_of(filename).media_type


def kind_of(filename: str, *, animated: bool = False) -> OutputKind:
    """The file's kind; an image ComfyUI reported as ``animated`` is a video."""
    kind = media_of(filename).kind
    return OutputKind.VIDEO if animated and kind is OutputKind.IMAGE else kind
