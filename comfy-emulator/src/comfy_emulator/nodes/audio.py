"""Audio: EmptyAudio and SaveAudio, as V3 nodes of ComfyUI 0.8.0's `comfy_extras/nodes_audio.py`.

An AUDIO value is an `AudioClip`: interleaved 16-bit PCM (ComfyUI holds a float waveform of
shape [batch, channels, samples]; here the batch is always one). SaveAudio writes a real FLAC
file (`comfy_emulator.flac`) named like ComfyUI's, `<prefix>_<counter:05>_.flac`, with the
prompt and each `extra_pnginfo` key as tags, and reports `{"audio": [file]}`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from comfy_emulator.files import save_target
from comfy_emulator.flac import encode_flac
from comfy_emulator.nodes.base import (
    ExecContext,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    v3_link,
)

_NODES_AUDIO = "comfy_extras.nodes_audio"
_DURATION_TIP = "Duration of the empty audio clip in seconds"
_CHANNELS_TIP = "Number of audio channels (1 for mono, 2 for stereo)."


@dataclass(frozen=True)
class AudioClip:
    pcm: bytes  # little-endian int16, channels interleaved
    sample_rate: int
    channels: int

    def __str__(self) -> str:
        samples = len(self.pcm) // (2 * self.channels)
        shape = f"[1, {self.channels}, {samples}]"
        return f"{{'waveform': tensor(shape={shape}), 'sample_rate': {self.sample_rate}}}"


class EmptyAudio(Node):
    class_type = "EmptyAudio"
    display_name = "Empty Audio"
    category = "audio"
    python_module = _NODES_AUDIO
    schema_v3 = True
    return_types = ("AUDIO",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        duration = {"default": 60.0, "min": 0.0, "max": 0xFFFFFFFFFFFFFFFF, "step": 0.01}
        rate = {"default": 44100, "min": 1, "max": 192000}
        channels = {"default": 2, "min": 1, "max": 2}
        return {
            "required": {
                "duration": ("FLOAT", {"tooltip": _DURATION_TIP, **duration}),
                "sample_rate": ("INT", {"tooltip": "Sample rate of the empty audio clip.", **rate}),
                "channels": ("INT", {"tooltip": _CHANNELS_TIP, **channels}),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        rate, channels = int(inputs["sample_rate"]), int(inputs["channels"])
        samples = round(float(inputs["duration"]) * rate)
        return NodeOutput((AudioClip(bytes(2 * channels * samples), rate, channels),))


class SaveAudio(Node):
    class_type = "SaveAudio"
    display_name = "Save Audio (FLAC)"
    category = "audio"
    python_module = _NODES_AUDIO
    schema_v3 = True
    output_node = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "audio": v3_link("AUDIO"),
                "filename_prefix": ("STRING", {"default": "audio/ComfyUI", "multiline": False}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        tags = _tags(ctx) if ctx.metadata_enabled else {}
        prefix, root = str(inputs["filename_prefix"]), ctx.env.folders.output
        result = await ctx.run_sync(_save, inputs["audio"], prefix, root, tags)
        return NodeOutput((), {"audio": [result]})


def _save(clip: AudioClip, prefix: str, root: str, tags: dict[str, str]) -> dict[str, str]:
    target = save_target(prefix, root, 0, 0)
    name = f"{target.filename.replace('%batch_num%', '0')}_{target.counter:05}_.flac"
    data = encode_flac(clip.pcm, clip.sample_rate, clip.channels, tags)
    with open(os.path.join(target.folder, name), "wb") as handle:
        handle.write(data)
    return {"filename": name, "subfolder": target.subfolder, "type": "output"}


def _tags(ctx: ExecContext) -> dict[str, str]:
    tags = {"prompt": json.dumps(ctx.prompt)}
    tags.update({key: json.dumps(value) for key, value in (ctx.extra_pnginfo or {}).items()})
    return tags


AUDIO_NODES: tuple[type[Node], ...] = (EmptyAudio, SaveAudio)
