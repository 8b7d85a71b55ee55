"""Mask nodes (comfy_extras/nodes_mask.py). Masks are mode "L" images, 255 meaning 1.0."""

from __future__ import annotations

from PIL import Image

from comfy_emulator.nodes.base import (
    MAX_RESOLUTION,
    ExecContext,
    ImageBatch,
    Inputs,
    InputTypes,
    MaskBatch,
    Node,
    NodeEnv,
    NodeOutput,
    v3_combo,
    v3_float,
    v3_int,
    v3_link,
)

_NODES_MASK = "comfy_extras.nodes_mask"
CHANNELS = ["red", "green", "blue", "alpha"]


class SolidMask(Node):
    class_type = "SolidMask"
    category = "mask"
    python_module = _NODES_MASK
    schema_v3 = True
    return_types = ("MASK",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "value": v3_float(1.0, min=0.0, max=1.0, step=0.01),
                "width": v3_int(512, min=1, max=MAX_RESOLUTION, step=1),
                "height": v3_int(512, min=1, max=MAX_RESOLUTION, step=1),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        level = round(inputs["value"] * 255)
        return NodeOutput(
            (MaskBatch([Image.new("L", (inputs["width"], inputs["height"]), level)]),)
        )


class MaskToImage(Node):
    class_type = "MaskToImage"
    display_name = "Convert Mask to Image"
    category = "mask"
    python_module = _NODES_MASK
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"mask": v3_link("MASK")}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((ImageBatch(m.convert("RGB") for m in inputs["mask"]),))


class ImageToMask(Node):
    class_type = "ImageToMask"
    display_name = "Convert Image to Mask"
    category = "mask"
    python_module = _NODES_MASK
    schema_v3 = True
    return_types = ("MASK",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"image": v3_link("IMAGE"), "channel": v3_combo(CHANNELS)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        index = CHANNELS.index(inputs["channel"])
        images: ImageBatch = inputs["image"]
        bands = len(images[0].getbands()) if images else 3
        if index >= bands:
            # IMAGE tensors have 3 channels, so ComfyUI's image[:, :, :, 3] fails like this.
            raise IndexError(f"index {index} is out of bounds for dimension 3 with size {bands}")
        return NodeOutput((MaskBatch(i.getchannel(index) for i in images),))


MASK_NODES: tuple[type[Node], ...] = (SolidMask, MaskToImage, ImageToMask)
