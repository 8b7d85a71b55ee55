"""Real video files from Pillow frames: MP4 (H.264, AAC audio) and WebM (VP9 or AV1), with PyAV.

ComfyUI encodes its videos with PyAV too, and the `av` wheels bundle an FFmpeg that has the
encoders ComfyUI asks for by name: `h264` (libx264), `libvpx-vp9`, `libsvtav1` and `aac`. The
settings are ComfyUI's (`comfy_api/latest/_input_impl/video_types.py` and SaveWEBM in
`comfy_extras/nodes_video.py`):

- the frame rate is rounded to thousandths, `Fraction(round(fps * 1000), 1000)`;
- MP4: H.264 in yuv420p at the encoder's default quality, `movflags=use_metadata_tags` (so
  the prompt and workflow survive as tags) `+faststart` (the index first: a player can start
  before the whole file has arrived); audio, when given, as AAC at the clip's own rate;
- WebM: constant quality (`crf`, bit rate 0); VP9 in yuv420p, AV1 in yuv420p10le at preset 6.

The nodes import this module only when they run, so loading FFmpeg costs nothing at start-up.
H.264 and 4:2:0 need even frame sizes: an odd one fails in the encoder, as it does in ComfyUI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.stream import VideoStream
from PIL import Image

from comfy_emulator.nodes.audio import AudioClip

WEBM_ENCODERS = {"vp9": "libvpx-vp9", "av1": "libsvtav1"}
_MP4_OPTIONS = {"movflags": "use_metadata_tags+faststart"}


def frame_rate(fps: float | Fraction) -> Fraction:
    """The rate written to the stream: ComfyUI keeps three decimals."""
    return Fraction(round(fps * 1000), 1000)


def write_mp4(
    path: str,
    frames: Sequence[Image.Image],
    fps: float | Fraction,
    audio: AudioClip | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    with av.open(path, mode="w", format="mp4", options=_MP4_OPTIONS) as container:
        container.metadata.update(metadata or {})
        video = _add_video(container, "h264", fps, frames, "yuv420p", {})
        # Every stream exists before the first packet: muxing one writes the header.
        tracks = [(_add_audio(container, audio), audio)] if audio is not None else []
        _encode_frames(container, video, frames)
        for stream, clip in tracks:
            _encode_audio(container, stream, clip)


def write_webm(
    path: str,
    frames: Sequence[Image.Image],
    fps: float,
    codec: str,
    crf: float,
    metadata: Mapping[str, str] | None = None,
) -> None:
    options = {"crf": str(crf)}
    if codec == "av1":
        options["preset"] = "6"
    pixel_format = "yuv420p10le" if codec == "av1" else "yuv420p"
    with av.open(path, mode="w", format="webm") as container:
        container.metadata.update(metadata or {})
        video = _add_video(container, WEBM_ENCODERS[codec], fps, frames, pixel_format, options)
        video.bit_rate = 0  # quality from crf alone
        _encode_frames(container, video, frames)


def _add_video(
    container: OutputContainer,
    encoder: str,
    fps: float | Fraction,
    frames: Sequence[Image.Image],
    pixel_format: str,
    options: Mapping[str, str],
) -> VideoStream:
    stream = container.add_stream(encoder, rate=frame_rate(fps))
    assert isinstance(stream, VideoStream)
    stream.width, stream.height = frames[0].size
    stream.pix_fmt = pixel_format
    stream.options = dict(options)
    return stream


def _encode_frames(
    container: OutputContainer, stream: VideoStream, frames: Iterable[Image.Image]
) -> None:
    for image in frames:
        _mux(container, stream.encode(_video_frame(image)))
    _mux(container, stream.encode(None))  # flush the frames the encoder still holds


def _video_frame(image: Image.Image) -> av.VideoFrame:
    # PyAV's stub leaves from_image untyped; it takes any Pillow image and copies its pixels.
    frame: av.VideoFrame = av.VideoFrame.from_image(image.convert("RGB"))  # type: ignore[no-untyped-call]
    return frame


def _layout(clip: AudioClip) -> str:
    return "stereo" if clip.channels == 2 else "mono"


def _add_audio(container: OutputContainer, clip: AudioClip) -> AudioStream:
    stream = container.add_stream("aac", rate=clip.sample_rate, layout=_layout(clip))
    assert isinstance(stream, AudioStream)
    return stream


def _encode_audio(container: OutputContainer, stream: AudioStream, clip: AudioClip) -> None:
    samples = len(clip.pcm) // (2 * clip.channels)
    if samples:
        # One frame of the whole clip; the encoder re-cuts it into AAC's 1024-sample frames.
        frame = av.AudioFrame(format="s16", layout=_layout(clip), samples=samples)
        frame.planes[0].update(clip.pcm[: samples * 2 * clip.channels])
        frame.sample_rate, frame.pts, frame.time_base = (
            clip.sample_rate,
            0,
            Fraction(1, clip.sample_rate),
        )
        _mux(container, stream.encode(frame))
    _mux(container, stream.encode(None))


def _mux(container: OutputContainer, packets: Iterable[Packet[Stream]]) -> None:
    for packet in packets:
        container.mux(packet)
