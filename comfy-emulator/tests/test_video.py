"""Image to video: the SVD stand-ins, the animated save nodes and the video file nodes (real
MP4 and WebM files, decoded back with PyAV), over real HTTP and WS."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from PIL import Image, ImageSequence

from comfy_emulator.config import default_models
from comfy_emulator.files import make_folders
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import NodeEnv
from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import image_to_video, solid_mp4, solid_webm


async def upload_start_frame(client: EmulatorClient, name: str = "start.png") -> str:
    buffer = io.BytesIO()
    start = Image.new("RGB", (96, 64), (20, 20, 20))
    start.paste((230, 230, 230), (48, 0, 96, 64))  # dark left half, light right half
    start.save(buffer, format="PNG")
    form = aiohttp.FormData()
    form.add_field("image", buffer.getvalue(), filename=name, content_type="image/png")
    async with client.session.post(client.base_url + "/upload/image", data=form) as response:
        assert response.status == 200
    return name


async def download(client: EmulatorClient, entry: dict[str, str]) -> tuple[str, bytes]:
    params = {k: entry[k] for k in ("filename", "subfolder", "type")}
    async with client.session.get(client.base_url + "/view", params=params) as response:
        assert response.status == 200
        return response.headers["Content-Type"], await response.read()


async def run(client: EmulatorClient, graph: dict[str, Any]) -> dict[str, Any]:
    async with client.websocket("c") as ws:
        prompt_id = (await client.post_prompt(graph, client_id="c"))["prompt_id"]
        events = await ws.wait_done(prompt_id)
    executed = [m["data"] for m in events if m["type"] == "executed"]
    history = (await client.history(prompt_id))[prompt_id]
    assert history["status"]["status_str"] == "success", history["status"]
    return {"executed": executed, "outputs": history["outputs"]}


def frames_of(data: bytes) -> list[Image.Image]:
    with Image.open(io.BytesIO(data)) as clip:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(clip)]


def brightness(image: Image.Image, xy: tuple[int, int]) -> int:
    value = image.convert("L").getpixel(xy)
    assert isinstance(value, int)
    return value


def frame_durations_ms(data: bytes) -> list[int]:
    durations = []
    with Image.open(io.BytesIO(data)) as clip:
        for frame in ImageSequence.Iterator(clip):
            frame.load()  # WebP reads a frame's duration as it decodes it
            durations.append(int(frame.info["duration"]))
    return durations


async def test_image_to_video_saves_one_animated_webp_with_every_frame(
    client: EmulatorClient,
) -> None:
    image = await upload_start_frame(client)
    graph = image_to_video(image, frames=5, fps=8, width=64, height=48, steps=2, prefix="v/clip")

    result = await run(client, graph)

    entry = {"filename": "clip_00001_.webp", "subfolder": "v", "type": "output"}
    assert result["outputs"]["7"] == {"images": [entry], "animated": [True]}
    assert result["executed"] == [
        {
            "node": "7",
            "display_node": "7",
            "output": {"images": [entry], "animated": [True]},
            "prompt_id": result["executed"][0]["prompt_id"],
        }
    ]
    content_type, data = await download(client, entry)
    assert content_type == "image/webp"
    with Image.open(io.BytesIO(data)) as clip:
        assert (clip.format, clip.size) == ("WEBP", (64, 48))
    assert len(frames_of(data)) == 5
    assert frame_durations_ms(data) == [125] * 5  # 1000 / 8 fps


async def test_the_picture_pans_with_the_motion_bucket(client: EmulatorClient) -> None:
    image = await upload_start_frame(client)

    async def last_frame(motion: int) -> Image.Image:
        graph = image_to_video(image, frames=3, width=64, height=48, steps=1, prefix=f"m{motion}")
        graph["3"]["inputs"]["motion_bucket_id"] = motion
        graph["7"]["inputs"]["lossless"] = True
        outputs = (await run(client, graph))["outputs"]
        _, data = await download(client, outputs["7"]["images"][0])
        return frames_of(data)[-1]

    still, moving = await last_frame(1), await last_frame(1023)
    # The start frame's left half is dark, its right half light: panning right by a quarter
    # of the width brings the light half round to the left edge.
    assert brightness(still, (2, 10)) < 100 < brightness(moving, (2, 10))


async def test_one_frame_is_saved_but_not_reported_as_animated(client: EmulatorClient) -> None:
    image = await upload_start_frame(client)
    graph = image_to_video(image, frames=1, width=32, height=32, steps=1, prefix="one")

    outputs = (await run(client, graph))["outputs"]

    assert outputs["7"] == {"images": [{"filename": "one_00001_.webp", "subfolder": "",
                                        "type": "output"}]}  # fmt: skip


async def test_save_animated_png_writes_an_apng_with_its_metadata_after_the_frames(
    client: EmulatorClient,
) -> None:
    image = await upload_start_frame(client)
    graph = image_to_video(image, frames=4, fps=5, width=32, height=32, steps=1)
    graph["7"] = {
        "class_type": "SaveAnimatedPNG",
        "inputs": {"images": ["6", 0], "filename_prefix": "apng", "fps": 4.0,
                   "compress_level": 1},
    }  # fmt: skip

    outputs = (await run(client, graph))["outputs"]

    entry = outputs["7"]["images"][0]
    assert (entry["filename"], outputs["7"]["animated"]) == ("apng_00001_.png", [True])
    content_type, data = await download(client, entry)
    assert content_type == "image/png"
    assert frame_durations_ms(data) == [250] * 4
    assert data.index(b"comf") > data.index(b"IDAT")
    assert b"SVD_img2vid_Conditioning" in data[data.index(b"comf") :]


async def test_webp_metadata_holds_the_prompt_in_exif(client: EmulatorClient) -> None:
    image = await upload_start_frame(client)
    graph = image_to_video(image, frames=2, width=32, height=32, steps=1, prefix="meta")

    outputs = (await run(client, graph))["outputs"]

    _, data = await download(client, outputs["7"]["images"][0])
    with Image.open(io.BytesIO(data)) as clip:
        model = clip.getexif()[0x0110]
    assert model.startswith("prompt:")
    assert json.loads(model.removeprefix("prompt:"))["7"]["class_type"] == "SaveAnimatedWEBP"


async def test_a_wrong_link_type_is_refused_like_comfyui(client: EmulatorClient) -> None:
    image = await upload_start_frame(client)
    graph = image_to_video(image)
    graph["3"]["inputs"]["clip_vision"] = ["1", 0]  # MODEL into CLIP_VISION

    status, body = await client.post_json("/prompt", {"prompt": graph})

    assert status == 400
    [error] = body["node_errors"]["3"]["errors"]
    assert error["type"] == "return_type_mismatch"


@pytest.fixture
def env(tmp_path: Path) -> NodeEnv:
    folders = make_folders(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "tmp"))
    return NodeEnv(folders, default_models())


def test_object_info_declares_the_video_nodes_as_comfyui_does(env: NodeEnv) -> None:
    registry = build_registry()
    info = {name: json.loads(json.dumps(registry.object_info(name, env))) for name in (
        "ImageOnlyCheckpointLoader", "SVD_img2vid_Conditioning", "VideoLinearCFGGuidance",
        "SaveAnimatedWEBP", "SaveAnimatedPNG")}  # fmt: skip

    loader = info["ImageOnlyCheckpointLoader"]
    assert loader["output"] == ["MODEL", "CLIP_VISION", "VAE"]
    assert "svd_xt.safetensors" in loader["input"]["required"]["ckpt_name"][0]
    assert loader["python_module"] == "comfy_extras.nodes_video_model"
    svd = info["SVD_img2vid_Conditioning"]
    assert svd["output_name"] == ["positive", "negative", "latent"]
    assert svd["input_order"]["required"] == [
        "clip_vision", "init_image", "vae", "width", "height", "video_frames",
        "motion_bucket_id", "fps", "augmentation_level"]  # fmt: skip
    assert svd["input"]["required"]["video_frames"] == ["INT", {"default": 14, "min": 1,
                                                                "max": 4096}]  # fmt: skip
    webp = info["SaveAnimatedWEBP"]
    assert webp["input"]["required"]["method"] == [
        "COMBO",
        {"multiselect": False, "options": ["default", "fastest", "slowest"]},
    ]
    assert webp["input"]["required"]["filename_prefix"] == [
        "STRING",
        {"default": "ComfyUI", "multiline": False},
    ]
    assert webp["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert (webp["output"], webp["output_node"], webp["display_name"]) == ([], True, None)
    assert webp["category"] == "image/animation"


async def test_empty_audio_is_saved_as_a_flac_file(client: EmulatorClient) -> None:
    graph = {
        "1": {"class_type": "EmptyAudio",
              "inputs": {"duration": 0.5, "sample_rate": 8000, "channels": 1}},
        "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0],
                                                    "filename_prefix": "audio/quiet"}},
    }  # fmt: skip

    outputs = (await run(client, graph))["outputs"]

    entry = {"filename": "quiet_00001_.flac", "subfolder": "audio", "type": "output"}
    assert outputs["2"] == {"audio": [entry]}
    content_type, data = await download(client, entry)
    assert content_type == "audio/flac"
    packed = int.from_bytes(data[18:26], "big")  # STREAMINFO: rate, channels, total samples
    assert (data[:4], packed >> 44, (packed >> 41 & 7) + 1, packed & (1 << 36) - 1) == (
        b"fLaC",
        8000,
        1,
        4000,
    )
    assert b"SaveAudio" in data  # the prompt, as a tag


def test_object_info_declares_the_audio_nodes_as_comfyui_does(env: NodeEnv) -> None:
    registry = build_registry()
    save = json.loads(json.dumps(registry.object_info("SaveAudio", env)))
    empty = json.loads(json.dumps(registry.object_info("EmptyAudio", env)))

    assert save["input"]["required"] == {
        "audio": ["AUDIO", {}],
        "filename_prefix": ["STRING", {"default": "audio/ComfyUI", "multiline": False}],
    }
    assert (save["display_name"], save["output_node"], save["output"]) == (
        "Save Audio (FLAC)", True, [])  # fmt: skip
    assert empty["input_order"]["required"] == ["duration", "sample_rate", "channels"]
    assert (empty["output"], empty["python_module"]) == (["AUDIO"], "comfy_extras.nodes_audio")


# ---- CreateVideo, SaveVideo, SaveWEBM ------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """What PyAV reads back from a video file."""

    container: str
    codec: str
    rate: Fraction
    frames: list[Image.Image]
    metadata: dict[str, str]
    audio: tuple[str, int, int] | None  # codec, sample rate, channels


def decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data), mode="r") as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        rate, codec = video.average_rate, video.codec.canonical_name
        frames = [frame.to_image() for frame in container.decode(video)]  # type: ignore[no-untyped-call]
        return Decoded(
            container.format.name,
            codec,
            Fraction(rate) if rate is not None else Fraction(0),
            frames,
            {key.lower(): value for key, value in container.metadata.items()},
            None if audio is None else (audio.codec.canonical_name, audio.rate, audio.channels),
        )


def save_video(frames: int, fps: float, prefix: str, **choices: str) -> dict[str, Any]:
    """EmptyImage -> CreateVideo -> SaveVideo ("3"), "auto" unless `choices` say otherwise."""
    graph = solid_mp4(prefix, frames=frames, fps=fps)
    graph["3"]["inputs"].update({"format": "auto", "codec": "auto", **choices})
    return graph


def near(image: Image.Image, expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    """The frame's centre has the colour, give or take the lossy codec's error."""
    pixel = image.getpixel((image.width // 2, image.height // 2))
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


async def test_save_video_writes_an_h264_mp4_with_every_frame_at_the_given_rate(
    client: EmulatorClient,
) -> None:
    graph = save_video(5, 12.0, "video/clip", format="mp4", codec="h264")

    result = await run(client, graph)

    entry = {"filename": "clip_00001_.mp4", "subfolder": "video", "type": "output"}
    assert result["outputs"] == {"3": {"images": [entry], "animated": [True]}}
    assert [e["output"] for e in result["executed"]] == [{"images": [entry], "animated": [True]}]
    content_type, data = await download(client, entry)
    assert content_type == "video/mp4"
    clip = decode(data)
    assert (clip.codec, clip.rate, len(clip.frames), clip.audio) == ("h264", Fraction(12), 5, None)
    assert "mp4" in clip.container.split(",")
    assert {frame.size for frame in clip.frames} == {(64, 48)}
    assert near(clip.frames[-1], (0x33, 0x66, 0xFF))
    assert json.loads(clip.metadata["prompt"])["3"]["class_type"] == "SaveVideo"


async def test_the_svd_chain_saved_as_mp4_keeps_its_frames_in_order_and_muxes_the_audio(
    client: EmulatorClient,
) -> None:
    image = await upload_start_frame(client)
    graph = image_to_video(
        image, frames=6, fps=8, motion_bucket_id=1023, width=64, height=48, steps=1
    )
    graph["7"] = {
        "class_type": "CreateVideo",
        "inputs": {"images": ["6", 0], "fps": 8.0, "audio": ["9", 0]},
    }
    graph["8"] = {
        "class_type": "SaveVideo",
        "inputs": {"video": ["7", 0], "filename_prefix": "svd", "format": "auto", "codec": "auto"},
    }
    graph["9"] = {"class_type": "EmptyAudio",
                  "inputs": {"duration": 0.75, "sample_rate": 16000, "channels": 2}}  # fmt: skip

    outputs = (await run(client, graph))["outputs"]

    entry = {"filename": "svd_00001_.mp4", "subfolder": "", "type": "output"}
    assert outputs == {"8": {"images": [entry], "animated": [True]}}
    clip = decode((await download(client, entry))[1])
    assert (clip.rate, len(clip.frames), clip.audio) == (Fraction(8), 6, ("aac", 16000, 2))
    # The start frame pans (dark left half, light right half): by the last frame the light
    # half has come round to the left edge.
    assert brightness(clip.frames[0], (2, 10)) < 100 < brightness(clip.frames[-1], (2, 10))


@pytest.mark.parametrize(("codec", "fps"), [("vp9", 7.5), ("av1", 24.0)])
async def test_save_webm_writes_a_webm_with_every_frame_at_the_given_rate(
    client: EmulatorClient, codec: str, fps: float
) -> None:
    outputs = (await run(client, solid_webm(f"webm/{codec}", frames=4, fps=fps, codec=codec)))[
        "outputs"
    ]

    entry = {"filename": f"{codec}_00001_.webm", "subfolder": "webm", "type": "output"}
    assert outputs == {"2": {"images": [entry], "animated": [True]}}
    content_type, data = await download(client, entry)
    assert content_type == "video/webm"
    clip = decode(data)
    assert (clip.codec, clip.rate, len(clip.frames)) == (codec, Fraction(fps), 4)
    assert "webm" in clip.container.split(",")
    assert near(clip.frames[0], (0x33, 0x66, 0xFF))
    assert json.loads(clip.metadata["prompt"])["2"]["class_type"] == "SaveWEBM"


async def test_one_frame_is_still_reported_as_animated(client: EmulatorClient) -> None:
    outputs = (await run(client, save_video(1, 30.0, "single")))["outputs"]

    assert outputs["3"]["animated"] == [True]
    assert len(decode((await download(client, outputs["3"]["images"][0]))[1]).frames) == 1


async def test_disable_metadata_leaves_the_prompt_out_of_save_video_only(
    start: Any,
) -> None:
    running = await start(metadata_enabled=False)
    async with EmulatorClient(running.url) as client:
        mp4 = (await run(client, save_video(2, 10.0, "quiet")))["outputs"]["3"]
        webm = (await run(client, solid_webm("loud", frames=2)))["outputs"]["2"]
        mp4_tags = decode((await download(client, mp4["images"][0]))[1]).metadata
        webm_tags = decode((await download(client, webm["images"][0]))[1]).metadata

    assert "prompt" not in mp4_tags
    assert "prompt" in webm_tags  # ComfyUI's SaveWEBM writes it regardless


@pytest.mark.parametrize(
    ("graph", "node", "name", "value", "options"),
    [
        (save_video(2, 10.0, "bad"), "3", "format", "webm", ["auto", "mp4"]),
        (save_video(2, 10.0, "bad"), "3", "codec", "vp9", ["auto", "h264"]),
        (solid_webm("bad", frames=2), "2", "codec", "h265", ["vp9", "av1"]),
    ],
)
async def test_a_value_outside_a_combo_is_refused_like_comfyui(
    client: EmulatorClient,
    env: NodeEnv,
    graph: dict[str, Any],
    node: str,
    name: str,
    value: str,
    options: list[str],
) -> None:
    graph[node]["inputs"][name] = value

    status, body = await client.post_json("/prompt", {"prompt": graph})

    assert status == 400
    [error] = body["node_errors"][node]["errors"]
    info = build_registry().object_info(graph[node]["class_type"], env)
    config = json.loads(json.dumps(info["input"]["required"][name]))
    assert error == {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": f"{name}: '{value}' not in {options}",
        "extra_info": {
            "input_name": name,
            "input_config": config,
            "received_value": value,
        },
    }
    assert body["node_errors"][node]["dependent_outputs"] == [node]
    assert body["error"] == {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": f"Value not in list: {error['details']}",
        "extra_info": {},
    }


def test_object_info_declares_the_video_file_nodes_as_comfyui_does(env: NodeEnv) -> None:
    registry = build_registry()
    create, save, webm = (json.loads(json.dumps(registry.object_info(name, env)))
                          for name in ("CreateVideo", "SaveVideo", "SaveWEBM"))  # fmt: skip

    assert create["input"] == {
        "required": {
            "images": ["IMAGE", {"tooltip": "The images to create a video from."}],
            "fps": ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}],
        },
        "optional": {"audio": ["AUDIO", {"tooltip": "The audio to add to the video."}]},
    }
    assert (create["output"], create["output_name"], create["output_node"]) == (
        ["VIDEO"], ["VIDEO"], False)  # fmt: skip
    assert (create["display_name"], create["description"]) == (
        "Create Video", "Create a video from images.")  # fmt: skip
    assert save["input_order"] == {
        "required": ["video", "filename_prefix", "format", "codec"],
        "hidden": ["prompt", "extra_pnginfo"],
    }
    assert save["input"]["required"]["format"] == [
        "COMBO",
        {"tooltip": "The format to save the video as.", "default": "auto",
         "multiselect": False, "options": ["auto", "mp4"]},
    ]  # fmt: skip
    assert save["input"]["required"]["codec"][1]["options"] == ["auto", "h264"]
    assert save["input"]["required"]["filename_prefix"][1]["default"] == "video/ComfyUI"
    assert (save["output"], save["output_node"], save["display_name"]) == ([], True, "Save Video")
    assert webm["input_order"]["required"] == ["images", "filename_prefix", "codec", "fps", "crf"]
    assert webm["input"]["required"]["codec"] == [
        "COMBO", {"multiselect": False, "options": ["vp9", "av1"]}]  # fmt: skip
    assert webm["input"]["required"]["fps"] == [
        "FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.01}]  # fmt: skip
    assert webm["input"]["required"]["crf"][1] == {
        "tooltip": "Higher crf means lower quality with a smaller file size, lower crf means "
        "higher quality higher filesize.",
        "default": 32.0, "min": 0, "max": 63.0, "step": 1,
    }  # fmt: skip
    assert (webm["display_name"], webm["experimental"], webm["output_node"]) == (None, True, True)
    for info in (create, save, webm):
        assert (info["category"], info["python_module"]) == (
            "image/video", "comfy_extras.nodes_video")  # fmt: skip
    assert (save["experimental"], create["experimental"]) == (False, False)
