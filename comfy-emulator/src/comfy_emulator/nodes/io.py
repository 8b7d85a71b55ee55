"""Nodes that touch files: LoadImage, SaveImage and PreviewImage.

SaveImage follows folder_paths.get_save_image_path: `<prefix base>_<counter:05>_.png`, the prefix's
directory part becomes the subfolder, `%width%`-style variables are expanded, and each PNG gets a
`prompt` text chunk plus one chunk per `extra_pnginfo` key (unless metadata is disabled).
PreviewImage writes to the temp folder as `ComfyUI_temp_<5 letters>_<counter>_.png`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from comfy_emulator.files import annotated_path, input_image_files, save_target
from comfy_emulator.nodes.base import (
    ExecContext,
    ImageBatch,
    Inputs,
    InputTypes,
    MaskBatch,
    Node,
    NodeEnv,
    NodeOutput,
)

_SAVE_DESCRIPTION = "Saves the input images to your ComfyUI output directory."
_PREFIX_TOOLTIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
)


class LoadImage(Node):
    class_type = "LoadImage"
    display_name = "Load Image"
    category = "image"
    return_types = ("IMAGE", "MASK")
    custom_validated = ("image",)
    has_fingerprint = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        files = input_image_files(env.folders)
        return {"required": {"image": (files, {"image_upload": True})}}

    @classmethod
    def validate_inputs(cls, env: NodeEnv, values: Mapping[str, Any]) -> bool | str:
        image = values.get("image")
        if not isinstance(image, str) or not os.path.exists(annotated_path(env.folders, image)):
            return f"Invalid image file: {image}"
        return True

    @classmethod
    def fingerprint(cls, env: NodeEnv, values: Mapping[str, Any]) -> Hashable:
        # IS_CHANGED hashes the file, so new content under the same name is not served from cache.
        with open(annotated_path(env.folders, str(values["image"])), "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        path = annotated_path(ctx.env.folders, inputs["image"])
        images, masks = await ctx.run_sync(load_frames, path)
        return NodeOutput((ImageBatch(images), MaskBatch(masks)))


def load_frames(path: str) -> tuple[list[Image.Image], list[Image.Image]]:
    """Frames of one size as RGB, with masks = 1 - alpha (or a 64x64 zero mask)."""
    images: list[Image.Image] = []
    masks: list[Image.Image] = []
    with Image.open(path) as source:
        for frame in ImageSequence.Iterator(source):
            upright = ImageOps.exif_transpose(frame) or frame
            rgb = upright.convert("RGB")
            if images and rgb.size != images[0].size:
                continue
            images.append(rgb)
            masks.append(_mask_of(upright))
            if source.format == "MPO":
                break
    return images, masks


def _mask_of(frame: Image.Image) -> Image.Image:
    if "A" in frame.getbands():
        return ImageOps.invert(frame.getchannel("A"))
    if frame.mode == "P" and "transparency" in frame.info:
        return ImageOps.invert(frame.convert("RGBA").getchannel("A"))
    return Image.new("L", (64, 64), 0)


class SaveImage(Node):
    class_type = "SaveImage"
    display_name = "Save Image"
    description = _SAVE_DESCRIPTION
    category = "image"
    output_node = True
    folder_type: ClassVar[str] = "output"
    compress_level: ClassVar[int] = 4

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": _PREFIX_TOOLTIP}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def prefix(self, inputs: Inputs) -> str:
        return str(inputs["filename_prefix"])

    def root(self, ctx: ExecContext) -> str:
        return ctx.env.folders.output

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        images: ImageBatch = inputs["images"]
        metadata = _png_info(ctx) if ctx.metadata_enabled else None
        prefix, root = self.prefix(inputs), self.root(ctx)
        results = await ctx.run_sync(self._save_all, prefix, root, images, metadata)
        return NodeOutput((), {"images": results})

    def _save_all(
        self, prefix: str, root: str, images: ImageBatch, metadata: PngInfo | None
    ) -> list[dict[str, str]]:
        width, height = images[0].size
        target = save_target(prefix, root, width, height)
        results = []
        for batch_number, image in enumerate(images):
            base = target.filename.replace("%batch_num%", str(batch_number))
            name = f"{base}_{target.counter + batch_number:05}_.png"
            path = os.path.join(target.folder, name)
            image.save(path, pnginfo=metadata, compress_level=self.compress_level)
            results.append(
                {"filename": name, "subfolder": target.subfolder, "type": self.folder_type}
            )
        return results


def _png_info(ctx: ExecContext) -> PngInfo:
    info = PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


class PreviewImage(SaveImage):
    class_type = "PreviewImage"
    display_name = "Preview Image"
    folder_type = "temp"
    compress_level = 1

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def prefix(self, inputs: Inputs) -> str:
        letters = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        return f"ComfyUI_temp_{letters}"

    def root(self, ctx: ExecContext) -> str:
        return ctx.env.folders.temp


IO_NODES: tuple[type[Node], ...] = (LoadImage, SaveImage, PreviewImage)
