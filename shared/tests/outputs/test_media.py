"""The suffix table: every output type the stack serves, with its kind and Content-Type."""

import pytest

from comfy_shared.models import OutputKind, TaskOutput
from comfy_shared.outputs.media import kind_of, media_type_of

IMAGE, VIDEO, AUDIO, OTHER = OutputKind.IMAGE, OutputKind.VIDEO, OutputKind.AUDIO, OutputKind.OTHER
TEXT = OutputKind.TEXT


@pytest.mark.parametrize(
    ("filename", "kind", "media_type"),
    [
        ("a_00001_.png", IMAGE, "image/png"),
        ("a.jpg", IMAGE, "image/jpeg"),
        ("a.jpeg", IMAGE, "image/jpeg"),
        ("a.webp", IMAGE, "image/webp"),
        ("a.gif", VIDEO, "image/gif"),
        ("a.mp4", VIDEO, "video/mp4"),
        ("a.webm", VIDEO, "video/webm"),
        ("a.mov", VIDEO, "video/quicktime"),
        ("a.wav", AUDIO, "audio/wav"),
        ("a.mp3", AUDIO, "audio/mpeg"),
        ("a.flac", AUDIO, "audio/flac"),
        ("a.ogg", AUDIO, "audio/ogg"),
        ("a.opus", AUDIO, "audio/opus"),
        ("a.txt", TEXT, "text/plain; charset=utf-8"),  # as a text a node reports
        ("a.json", OTHER, "application/json"),
    ],
)
def test_each_known_suffix_has_its_kind_and_media_type(
    filename: str, kind: OutputKind, media_type: str
) -> None:
    assert (kind_of(filename), media_type_of(filename)) == (kind, media_type)


@pytest.mark.parametrize("filename", ["model.safetensors", "no_suffix", "page.html", ".png"])
def test_anything_else_is_other_and_served_as_octets(filename: str) -> None:
    assert (kind_of(filename), media_type_of(filename)) == (OTHER, "application/octet-stream")


def test_the_suffix_is_matched_without_case_and_only_at_the_end() -> None:
    assert media_type_of("SHOUT.WEBP") == "image/webp"
    assert media_type_of("clip.mp4.part") == "application/octet-stream"
    assert media_type_of("sub/dir.webm/clip.wav") == "audio/wav"


def test_an_animated_image_is_a_video_but_keeps_its_media_type() -> None:
    assert kind_of("clip.webp", animated=True) is VIDEO
    assert kind_of("clip.png", animated=True) is VIDEO
    assert kind_of("song.flac", animated=True) is AUDIO  # the flag only concerns images
    assert media_type_of("clip.webp") == "image/webp"


def test_a_task_output_carries_its_media_type() -> None:
    output = TaskOutput(node_id="9", kind=VIDEO, filename="clip_00001_.webp")

    assert output.media_type == "image/webp"
    assert output.model_dump()["media_type"] == "image/webp"
    assert TaskOutput.model_validate_json(output.model_dump_json()) == output
