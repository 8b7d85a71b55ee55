"""Model-free image nodes, implemented with Pillow.

Input declarations and object_info metadata follow ComfyUI 0.8.0 (`nodes.py` for the classic
nodes, `comfy_extras/nodes_post_processing.py` and `nodes_images.py` for the V3 ones). Pixel
results are close to ComfyUI's but not bit-identical (Pillow filters instead of torch kernels).
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageFilter, ImageOps

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

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_POST_PROCESSING = "comfy_extras.nodes_post_processing"
_NODES_IMAGES = "comfy_extras.nodes_images"


def _size_input(default: int, minimum: int) -> tuple[str, dict[str, int]]:
    return ("INT", {"default": default, "min": minimum, "max": MAX_RESOLUTION, "step": 1})


class EmptyImage(Node):
    class_type = "EmptyImage"
    category = "image"
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        color = {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}
        return {
            "required": {
                "width": _size_input(512, 1),
                "height": _size_input(512, 1),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", color),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        color: int = inputs["color"]
        rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
        image = Image.new("RGB", (inputs["width"], inputs["height"]), rgb)
        return NodeOutput((ImageBatch(image.copy() for _ in range(inputs["batch_size"])),))


class ImageInvert(Node):
    class_type = "ImageInvert"
    display_name = "Invert Image"
    category = "image"
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"image": ("IMAGE",)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        images = await ctx.run_sync(lambda: [ImageOps.invert(i) for i in inputs["image"]])
        return NodeOutput((ImageBatch(images),))


def scale_image(image: Image.Image, method: str, width: int, height: int, crop: str) -> Image.Image:
    """ImageScale semantics: a 0 side keeps the aspect ratio; "center" crops to the new ratio."""
    if width == 0 and height == 0:
        return image
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    elif height == 0:
        height = max(1, round(image.height * width / image.width))
    if crop == "center":
        return ImageOps.fit(image, (width, height), method=_RESAMPLE[method])
    return image.resize((width, height), _RESAMPLE[method])


class ImageScale(Node):
    class_type = "ImageScale"
    display_name = "Upscale Image"
    category = "image/upscaling"
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (list(UPSCALE_METHODS),),
                "width": _size_input(512, 0),
                "height": _size_input(512, 0),
                "crop": (["disabled", "center"],),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        args = (inputs["upscale_method"], inputs["width"], inputs["height"], inputs["crop"])
        images = await ctx.run_sync(lambda: [scale_image(i, *args) for i in inputs["image"]])
        return NodeOutput((ImageBatch(images),))


class ImageScaleBy(Node):
    class_type = "ImageScaleBy"
    display_name = "Upscale Image By"
    category = "image/upscaling"
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        scale = {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (list(UPSCALE_METHODS),),
                "scale_by": ("FLOAT", scale),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        method, scale = inputs["upscale_method"], inputs["scale_by"]

        def run(image: Image.Image) -> Image.Image:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            return image.resize(size, _RESAMPLE[method])

        images = await ctx.run_sync(lambda: [run(i) for i in inputs["image"]])
        return NodeOutput((ImageBatch(images),))


class ImageBlur(Node):
    class_type = "ImageBlur"
    category = "image/postprocessing"
    python_module = _POST_PROCESSING
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image": v3_link("IMAGE"),
                "blur_radius": v3_int(1, min=1, max=31, step=1),
                "sigma": v3_float(1.0, min=0.1, max=10.0, step=0.1),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        # ComfyUI's kernel spans [-1, 1] over blur_radius pixels, so sigma is in radius units.
        radius = min(inputs["sigma"] * inputs["blur_radius"], float(inputs["blur_radius"]))
        blur = ImageFilter.GaussianBlur(radius)
        images = await ctx.run_sync(lambda: [i.filter(blur) for i in inputs["image"]])
        return NodeOutput((ImageBatch(images),))


class ImageSharpen(Node):
    class_type = "ImageSharpen"
    category = "image/postprocessing"
    python_module = _POST_PROCESSING
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image": v3_link("IMAGE"),
                "sharpen_radius": v3_int(1, min=1, max=31, step=1),
                "sigma": v3_float(1.0, min=0.1, max=10.0, step=0.01),
                "alpha": v3_float(1.0, min=0.0, max=5.0, step=0.01),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        radius = min(inputs["sigma"] * inputs["sharpen_radius"], float(inputs["sharpen_radius"]))
        mask = ImageFilter.UnsharpMask(radius=radius, percent=round(inputs["alpha"] * 100))
        images = await ctx.run_sync(lambda: [i.filter(mask) for i in inputs["image"]])
        return NodeOutput((ImageBatch(images),))


BLEND_MODES = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]


def blend_images(first: Image.Image, second: Image.Image, factor: float, mode: str) -> Image.Image:
    if second.size != first.size:
        second = ImageOps.fit(second, first.size, method=Image.Resampling.BICUBIC)
    modes = {
        "normal": lambda: second,
        "multiply": lambda: ImageChops.multiply(first, second),
        "screen": lambda: ImageChops.screen(first, second),
        "overlay": lambda: ImageChops.overlay(first, second),
        "soft_light": lambda: ImageChops.soft_light(first, second),
        "difference": lambda: ImageChops.subtract(first, second),
    }
    return Image.blend(first, modes[mode](), factor)


class ImageBlend(Node):
    class_type = "ImageBlend"
    category = "image/postprocessing"
    python_module = _POST_PROCESSING
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image1": v3_link("IMAGE"),
                "image2": v3_link("IMAGE"),
                "blend_factor": v3_float(0.5, min=0.0, max=1.0, step=0.01),
                "blend_mode": v3_combo(BLEND_MODES),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        firsts, seconds = inputs["image1"], inputs["image2"]
        factor, mode = inputs["blend_factor"], inputs["blend_mode"]

        def run() -> list[Image.Image]:
            pairs = [(a, seconds[min(n, len(seconds) - 1)]) for n, a in enumerate(firsts)]
            return [blend_images(a, b, factor, mode) for a, b in pairs]

        return NodeOutput((ImageBatch(await ctx.run_sync(run)),))


class ImageCrop(Node):
    class_type = "ImageCrop"
    display_name = "Image Crop"
    category = "image/transform"
    python_module = _NODES_IMAGES
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image": v3_link("IMAGE"),
                "width": v3_int(512, min=1, max=MAX_RESOLUTION, step=1),
                "height": v3_int(512, min=1, max=MAX_RESOLUTION, step=1),
                "x": v3_int(0, min=0, max=MAX_RESOLUTION, step=1),
                "y": v3_int(0, min=0, max=MAX_RESOLUTION, step=1),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        def crop(image: Image.Image) -> Image.Image:
            x, y = min(inputs["x"], image.width - 1), min(inputs["y"], image.height - 1)
            right = min(x + inputs["width"], image.width)
            return image.crop((x, y, right, min(y + inputs["height"], image.height)))

        return NodeOutput((ImageBatch(crop(i) for i in inputs["image"]),))


class ImageFlip(Node):
    class_type = "ImageFlip"
    category = "image/transform"
    python_module = _NODES_IMAGES
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        methods = ["x-axis: vertically", "y-axis: horizontally"]
        return {"required": {"image": v3_link("IMAGE"), "flip_method": v3_combo(methods)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        # "x-axis" mirrors across the horizontal axis (top <-> bottom).
        vertical = inputs["flip_method"].startswith("x")
        op = Image.Transpose.FLIP_TOP_BOTTOM if vertical else Image.Transpose.FLIP_LEFT_RIGHT
        return NodeOutput((ImageBatch(i.transpose(op) for i in inputs["image"]),))


class ImageRotate(Node):
    class_type = "ImageRotate"
    category = "image/transform"
    python_module = _NODES_IMAGES
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        rotations = ["none", "90 degrees", "180 degrees", "270 degrees"]
        return {"required": {"image": v3_link("IMAGE"), "rotation": v3_combo(rotations)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        # ComfyUI rotates clockwise (torch.rot90 over dims [2, 1]); Pillow's ROTATE_* is
        # counter-clockwise, hence the swapped names.
        ops = {
            "90": Image.Transpose.ROTATE_270,
            "180": Image.Transpose.ROTATE_180,
            "270": Image.Transpose.ROTATE_90,
        }
        op = ops.get(inputs["rotation"].split(" ")[0])
        images = inputs["image"] if op is None else [i.transpose(op) for i in inputs["image"]]
        return NodeOutput((ImageBatch(images),))


class RepeatImageBatch(Node):
    class_type = "RepeatImageBatch"
    category = "image/batch"
    python_module = _NODES_IMAGES
    schema_v3 = True
    return_types = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"image": v3_link("IMAGE"), "amount": v3_int(1, min=1, max=4096)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((ImageBatch(list(inputs["image"]) * inputs["amount"]),))


class GetImageSize(Node):
    class_type = "GetImageSize"
    display_name = "Get Image Size"
    description = "Returns width and height of the image, and passes it through unchanged."
    category = "image"
    python_module = _NODES_IMAGES
    schema_v3 = True
    return_types = ("INT", "INT", "INT")
    return_names = ("width", "height", "batch_size")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"image": v3_link("IMAGE")}, "hidden": {"unique_id": ("UNIQUE_ID",)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        images: ImageBatch = inputs["image"]
        width, height = images[0].size
        ctx.send_text(f"width: {width}, height: {height}\n batch size: {len(images)}")
        return NodeOutput((width, height, len(images)))


IMAGE_NODES: tuple[type[Node], ...] = (
    EmptyImage,
    ImageInvert,
    ImageScale,
    ImageScaleBy,
    ImageBlur,
    ImageSharpen,
    ImageBlend,
    ImageCrop,
    ImageFlip,
    ImageRotate,
    RepeatImageBatch,
    GetImageSize,
)
