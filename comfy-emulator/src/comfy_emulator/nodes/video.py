"""Image-to-video (Stable Video Diffusion) stand-ins and the animated save nodes.

Declarations follow ComfyUI 0.8.0: `comfy_extras/nodes_video_model.py` (classic V1 nodes:
ImageOnlyCheckpointLoader, SVD_img2vid_Conditioning, VideoLinearCFGGuidance) and
`comfy_extras/nodes_images.py` (V3 nodes: SaveAnimatedWEBP, SaveAnimatedPNG).

The conditioning node resizes the start image to the video size and hands KSampler a latent of
`video_frames` frames that carries it (`Motion`); VAEDecode then yields one frame per latent
frame, the start image panning with `motion_bucket_id` (see `render.video_frame`).

The save nodes write one real animated file per batch with Pillow (`duration` = 1000 / fps ms
per frame, truncated as ComfyUI does) and report it as ComfyUI's `SavedImages` does:
`{"images": [file], "animated": [true]}`, the flag only when there is more than one frame.
Metadata as ComfyUI writes it: WEBP gets the prompt in EXIF tag 0x0110 (Model) and each
`extra_pnginfo` key in 0x010F (Make) downwards; APNG gets `comf` chunks after the image data.

The video nodes follow `comfy_extras/nodes_video.py` (V3 nodes): CreateVideo bundles frames, a
frame rate and an optional AUDIO into a VIDEO (`VideoClip`, ComfyUI's VideoFromComponents);
SaveVideo writes it as a real MP4 (H.264, and the audio as AAC) and SaveWEBM writes frames as a
real WebM (VP9 or AV1), both through PyAV (`comfy_emulator.video_encoder`, imported when they
run). Both report `{"images": [file], "animated": [true]}` (ComfyUI's PreviewVideo), the flag
even for one frame. SaveVideo's metadata (each `extra_pnginfo` key and `prompt`, JSON) obeys
`--disable-metadata`; SaveWEBM writes its tags regardless, as ComfyUI's does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from comfy_emulator.files import SaveTarget, save_target
from comfy_emulator.model_memory import checkpoint_disk_lines, family_of
from comfy_emulator.nodes.audio import AudioClip
from comfy_emulator.nodes.base import (
    MAX_RESOLUTION,
    ExecContext,
    ImageBatch,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    v3_combo,
    v3_float,
    v3_int,
    v3_link,
)
from comfy_emulator.nodes.models import (
    ClipHandle,
    Conditioning,
    Latent,
    ModelHandle,
    Motion,
    VaeHandle,
)

_VIDEO_MODEL = "comfy_extras.nodes_video_model"
_NODES_IMAGES = "comfy_extras.nodes_images"
_NODES_VIDEO = "comfy_extras.nodes_video"
_VIDEO_TYPES = "comfy_api.latest._input_impl.video_types"
_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


@dataclass(frozen=True)
class ClipVisionHandle:
    checkpoint: str

    def model_files(self) -> tuple[str, ...]:
        return (self.checkpoint,)


class ImageOnlyCheckpointLoader(Node):
    class_type = "ImageOnlyCheckpointLoader"
    display_name = "Image Only Checkpoint Loader (img2vid model)"
    category = "loaders/video_models"
    python_module = _VIDEO_MODEL
    return_types = ("MODEL", "CLIP_VISION", "VAE")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"ckpt_name": (env.model_names("checkpoints"),)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        name = inputs["ckpt_name"]
        await ctx.load_model(name, checkpoint_disk_lines(family_of("checkpoints", name)))
        return NodeOutput((ModelHandle(name), ClipVisionHandle(name), VaeHandle(name)))


class SVD_img2vid_Conditioning(Node):
    class_type = "SVD_img2vid_Conditioning"
    category = "conditioning/video_models"
    python_module = _VIDEO_MODEL
    return_types = ("CONDITIONING", "CONDITIONING", "LATENT")
    return_names = ("positive", "negative", "latent")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        def side(default: int) -> tuple[str, dict[str, int]]:
            return ("INT", {"default": default, "min": 16, "max": MAX_RESOLUTION, "step": 8})

        augmentation = {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01}
        return {
            "required": {
                "clip_vision": ("CLIP_VISION",),
                "init_image": ("IMAGE",),
                "vae": ("VAE",),
                "width": side(1024),
                "height": side(576),
                "video_frames": ("INT", {"default": 14, "min": 1, "max": 4096}),
                "motion_bucket_id": ("INT", {"default": 127, "min": 1, "max": 1023}),
                "fps": ("INT", {"default": 6, "min": 1, "max": 1024}),
                "augmentation_level": ("FLOAT", augmentation),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        clip_vision: ClipVisionHandle = inputs["clip_vision"]
        width, height = inputs["width"], inputs["height"]
        start = await ctx.run_sync(_fit, inputs["init_image"][0], width, height)
        motion = Motion(
            start, inputs["motion_bucket_id"], inputs["fps"], inputs["augmentation_level"]
        )
        clip = ClipHandle(clip_vision.checkpoint)
        settings = (
            f"motion {motion.motion_bucket_id}, fps {motion.fps}, "
            f"augmentation {motion.augmentation_level}"
        )
        # Real latents are 1/8 of the pixel size: the frames come out in multiples of 8.
        latent = Latent(width // 8 * 8, height // 8 * 8, inputs["video_frames"], motion=motion)
        positive, negative = Conditioning(settings, clip), Conditioning("", clip)
        return NodeOutput((positive, negative, latent))


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """common_upscale(..., "bilinear", "center"): crop to the aspect ratio, then scale."""
    size = (width // 8 * 8, height // 8 * 8)
    return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.BILINEAR)


class VideoLinearCFGGuidance(Node):
    class_type = "VideoLinearCFGGuidance"
    category = "sampling/video_models"
    python_module = _VIDEO_MODEL
    return_types = ("MODEL",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        min_cfg = {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.5, "round": 0.01}
        return {"required": {"model": ("MODEL",), "min_cfg": ("FLOAT", min_cfg)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        # Only changes how guidance ramps across frames; the stand-in picture is unaffected.
        return NodeOutput((inputs["model"],))


# ---- animated saves (V3 nodes of comfy_extras/nodes_images.py) ---------------------------


def _prefix_input() -> tuple[str, dict[str, Any]]:
    return ("STRING", {"default": "ComfyUI", "multiline": False})


def _fps_input() -> tuple[str, dict[str, Any]]:
    return v3_float(6.0, min=0.01, max=1000.0, step=0.01)


def _frame_ms(fps: float) -> int:
    return int(1000.0 / fps)


class _AnimatedSave(Node):
    category = "image/animation"
    python_module = _NODES_IMAGES
    schema_v3 = True
    output_node = True
    suffix: ClassVar[str] = ".webp"

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        images: ImageBatch = inputs["images"]
        prefix, root = str(inputs["filename_prefix"]), ctx.env.folders.output
        path, result = await ctx.run_sync(self._target, prefix, root, images)
        await ctx.run_sync(self.write, path, images, inputs, ctx)
        ui: dict[str, list[Any]] = {"images": [result]}
        if len(images) > 1:
            ui["animated"] = [True]
        return NodeOutput((), ui)

    def _target(self, prefix: str, root: str, images: ImageBatch) -> tuple[str, dict[str, str]]:
        return _output_file(save_target(prefix, root, *images[0].size), self.suffix)

    def write(self, path: str, images: ImageBatch, inputs: Inputs, ctx: ExecContext) -> None:
        raise NotImplementedError


class SaveAnimatedWEBP(_AnimatedSave):
    class_type = "SaveAnimatedWEBP"
    methods: ClassVar[dict[str, int]] = {"default": 4, "fastest": 0, "slowest": 6}

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": v3_link("IMAGE"),
                "filename_prefix": _prefix_input(),
                "fps": _fps_input(),
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": v3_int(80, min=0, max=100),
                "method": v3_combo(cls.methods),
            },
            "hidden": dict(_HIDDEN),
        }

    def write(self, path: str, images: ImageBatch, inputs: Inputs, ctx: ExecContext) -> None:
        first, *rest = images
        first.save(
            path,
            format="WEBP",
            save_all=True,
            append_images=rest,
            duration=_frame_ms(inputs["fps"]),
            exif=_webp_exif(first, ctx),
            lossless=inputs["lossless"],
            quality=inputs["quality"],
            method=self.methods[inputs["method"]],
        )


def _output_file(target: SaveTarget, suffix: str) -> tuple[str, dict[str, str]]:
    """The path to write and the entry ComfyUI reports for it: `<prefix>_<counter:05>_<suffix>`."""
    name = f"{target.filename}_{target.counter:05}_{suffix}"
    result = {"filename": name, "subfolder": target.subfolder, "type": "output"}
    return os.path.join(target.folder, name), result


def _webp_exif(image: Image.Image, ctx: ExecContext) -> Image.Exif:
    exif = image.getexif()
    if not ctx.metadata_enabled:
        return exif
    exif[0x0110] = f"prompt:{json.dumps(ctx.prompt)}"  # Model
    tag = 0x010F  # Make, then downwards
    for key, value in (ctx.extra_pnginfo or {}).items():
        exif[tag] = f"{key}:{json.dumps(value)}"
        tag -= 1
    return exif


class SaveAnimatedPNG(_AnimatedSave):
    class_type = "SaveAnimatedPNG"
    suffix = ".png"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": v3_link("IMAGE"),
                "filename_prefix": _prefix_input(),
                "fps": _fps_input(),
                "compress_level": v3_int(4, min=0, max=9),
            },
            "hidden": dict(_HIDDEN),
        }

    def write(self, path: str, images: ImageBatch, inputs: Inputs, ctx: ExecContext) -> None:
        first, *rest = images
        first.save(
            path,
            format="PNG",
            save_all=True,
            append_images=rest,
            duration=_frame_ms(inputs["fps"]),
            pnginfo=_apng_info(ctx) if ctx.metadata_enabled else None,
            compress_level=inputs["compress_level"],
        )


def _apng_info(ctx: ExecContext) -> PngInfo:
    # Chunks after the image data, so players that stop at the first frame never read them.
    info = PngInfo()
    entries = {"prompt": ctx.prompt, **(ctx.extra_pnginfo or {})}
    for key, value in entries.items():
        data = key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1")
        info.add(b"comf", data, after_idat=True)
    return info


# ---- video files (V3 nodes of comfy_extras/nodes_video.py) --------------------------------

_PREFIX_TIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
)
_CRF_TIP = (
    "Higher crf means lower quality with a smaller file size, lower crf means higher quality "
    "higher filesize."
)


@dataclass(frozen=True, eq=False)
class VideoClip:
    """A VIDEO value built from its parts, as ComfyUI's VideoFromComponents."""

    frames: ImageBatch
    fps: Fraction
    audio: AudioClip | None = None

    def __str__(self) -> str:
        return f"<{_VIDEO_TYPES}.VideoFromComponents object at {id(self):#x}>"


class CreateVideo(Node):
    class_type = "CreateVideo"
    display_name = "Create Video"
    category = "image/video"
    description = "Create a video from images."
    python_module = _NODES_VIDEO
    schema_v3 = True
    return_types = ("VIDEO",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to create a video from."}),
                "fps": v3_float(30.0, min=1.0, max=120.0, step=1.0),
            },
            "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})},
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        clip = VideoClip(inputs["images"], Fraction(inputs["fps"]), inputs.get("audio"))
        return NodeOutput((clip,))


class _VideoSave(Node):
    category = "image/video"
    python_module = _NODES_VIDEO
    schema_v3 = True
    output_node = True

    async def _output_target(
        self, ctx: ExecContext, prefix: str, size: tuple[int, int], suffix: str
    ) -> tuple[str, NodeOutput]:
        """Where to write, and what to report once written (PreviewVideo: always animated)."""
        target = await ctx.run_sync(save_target, prefix, ctx.env.folders.output, *size)
        path, result = _output_file(target, suffix)
        return path, NodeOutput((), {"images": [result], "animated": [True]})


class SaveVideo(_VideoSave):
    class_type = "SaveVideo"
    display_name = "Save Video"
    description = "Saves the input images to your ComfyUI output directory."

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        def choice(options: list[str], tooltip: str) -> tuple[str, dict[str, Any]]:
            combo = v3_combo(options)
            return (combo[0], {"tooltip": tooltip, "default": "auto", **combo[1]})

        prefix = {"tooltip": _PREFIX_TIP, "default": "video/ComfyUI", "multiline": False}
        return {
            "required": {
                "video": ("VIDEO", {"tooltip": "The video to save."}),
                "filename_prefix": ("STRING", prefix),
                "format": choice(["auto", "mp4"], "The format to save the video as."),
                "codec": choice(["auto", "h264"], "The codec to use for the video."),
            },
            "hidden": dict(_HIDDEN),
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        clip: VideoClip = inputs["video"]
        # "auto" and "mp4", "auto" and "h264" are the only choices: all of them are H.264 MP4.
        metadata = _video_metadata(ctx) if ctx.metadata_enabled else {}
        path, output = await self._output_target(
            ctx, inputs["filename_prefix"], clip.frames[0].size, ".mp4"
        )
        await ctx.run_sync(_write_mp4, path, clip, metadata)
        return output


def _video_metadata(ctx: ExecContext) -> dict[str, str]:
    entries = {**(ctx.extra_pnginfo or {}), "prompt": ctx.prompt}
    return {key: json.dumps(value) for key, value in entries.items()}


def _write_mp4(path: str, clip: VideoClip, metadata: dict[str, str]) -> None:
    from comfy_emulator.video_encoder import write_mp4  # loads FFmpeg: only once needed

    write_mp4(path, clip.frames, clip.fps, clip.audio, metadata)


class SaveWEBM(_VideoSave):
    class_type = "SaveWEBM"
    experimental = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        crf = {"tooltip": _CRF_TIP, "default": 32.0, "min": 0, "max": 63.0, "step": 1}
        return {
            "required": {
                "images": v3_link("IMAGE"),
                "filename_prefix": _prefix_input(),
                "codec": v3_combo(["vp9", "av1"]),
                "fps": v3_float(24.0, min=0.01, max=1000.0, step=0.01),
                "crf": ("FLOAT", crf),
            },
            "hidden": dict(_HIDDEN),
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        images: ImageBatch = inputs["images"]
        path, output = await self._output_target(
            ctx, inputs["filename_prefix"], images[0].size, ".webm"
        )
        await ctx.run_sync(_write_webm, path, images, inputs, _webm_metadata(ctx))
        return output


def _webm_metadata(ctx: ExecContext) -> dict[str, str]:
    # ComfyUI's SaveWEBM ignores --disable-metadata: the prompt first, then each extra key.
    entries = {"prompt": ctx.prompt, **(ctx.extra_pnginfo or {})}
    return {key: json.dumps(value) for key, value in entries.items()}


def _write_webm(path: str, images: ImageBatch, inputs: Inputs, metadata: dict[str, str]) -> None:
    from comfy_emulator.video_encoder import write_webm  # loads FFmpeg: only once needed

    write_webm(path, images, inputs["fps"], inputs["codec"], inputs["crf"], metadata)


VIDEO_NODES: tuple[type[Node], ...] = (
    ImageOnlyCheckpointLoader,
    SVD_img2vid_Conditioning,
    VideoLinearCFGGuidance,
    SaveAnimatedWEBP,
    SaveAnimatedPNG,
    SaveWEBM,
    SaveVideo,
    CreateVideo,
)
