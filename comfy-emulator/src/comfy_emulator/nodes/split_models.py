"""Stand-ins for models shipped as separate files (diffusion model, text encoder, VAE).

These are the classes of the graph ComfyUI's web frontend loads by default (Z-Image Turbo):
`UNETLoader` -> `ModelSamplingAuraFlow` -> KSampler, `CLIPLoader` -> CLIPTextEncode,
`EmptySD3LatentImage` -> KSampler, `VAELoader` -> VAEDecode. Their object_info matches
ComfyUI 0.8.0's: the three loaders and ModelSamplingAuraFlow are classic (V1) nodes,
EmptySD3LatentImage a V3 node.

The loaders hand out the same handles as CheckpointLoaderSimple (named after the file), so the
diffusion model's file name reaches the sampler's `RenderSpec` and the picture depends on it.
The loaders pay a file's load time when it is not resident in the emulated VRAM and log what
ComfyUI logs when it reads one from disk (see `model_memory`); "pixel_space" and the tiny
autoencoders are no installed files and cost nothing. ModelSamplingAuraFlow passes its model
through: a shift changes only the noise schedule, which
the stand-in sampler does not have.
"""

from __future__ import annotations

from comfy_emulator.model_memory import family_of
from comfy_emulator.nodes.base import (
    MAX_RESOLUTION,
    ExecContext,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    v3_int,
)
from comfy_emulator.nodes.models import ClipHandle, Latent, ModelHandle, VaeHandle

# UNETLoader's weight_dtype, and the dtype ComfyUI logs for each (a bf16 file by default).
WEIGHT_DTYPES: dict[str, str] = {
    "default": "torch.bfloat16",
    "fp8_e4m3fn": "torch.float8_e4m3fn",
    "fp8_e4m3fn_fast": "torch.float8_e4m3fn",
    "fp8_e5m2": "torch.float8_e5m2",
}

# CLIPLoader's `type` in ComfyUI 0.8.0, in order (later versions append more).
CLIP_TYPES: tuple[str, ...] = (
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
    "flux2",
    "ovis",
)
CLIP_DEVICES: tuple[str, ...] = ("default", "cpu")

# CLIPLoader's description, as 0.8.0 words it (the odd space before "hidream" included).
CLIP_RECIPES = (
    "[Recipes]\n\n"
    "stable_diffusion: clip-l\n"
    "stable_cascade: clip-g\n"
    "sd3: t5 xxl/ clip-g / clip-l\n"
    "stable_audio: t5 base\n"
    "mochi: t5 xxl\n"
    "cosmos: old t5 xxl\n"
    "lumina2: gemma 2 2B\n"
    "wan: umt5 xxl\n"
    " hidream: llama-3.1 (Recommend) or t5\n"
    "omnigen2: qwen vl 2.5 3B"
)

# Tiny autoencoders in the vae_approx folder that VAELoader offers besides the vae folder: an
# image one by its name once both halves (<name>_encoder.*, <name>_decoder.*) are there, in
# this order; a video one by its file name.
IMAGE_TAES: tuple[str, ...] = ("taesd", "taesdxl", "taesd3", "taef1")
VIDEO_TAES: tuple[str, ...] = ("taehv", "lighttaew2_2", "lighttaew2_1", "lighttaehy1_5")
PIXEL_SPACE = "pixel_space"  # always offered: a VAE that passes pixels through


class UNETLoader(Node):
    class_type = "UNETLoader"
    display_name = "Load Diffusion Model"
    category = "advanced/loaders"
    return_types = ("MODEL",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "unet_name": (env.model_names("diffusion_models"),),
                "weight_dtype": (list(WEIGHT_DTYPES),),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        name = inputs["unet_name"]
        dtype = WEIGHT_DTYPES[inputs["weight_dtype"]]
        cast = "None" if inputs["weight_dtype"] == "default" else "torch.bfloat16"
        model_type = family_of("diffusion_models", name).model_type
        disk_lines = [
            f"model weight dtype {dtype}, manual cast: {cast}",
            f"model_type {model_type}",
        ]
        await ctx.load_model(name, disk_lines)
        return NodeOutput((ModelHandle(name),))


class CLIPLoader(Node):
    class_type = "CLIPLoader"
    display_name = "Load CLIP"
    description = CLIP_RECIPES
    category = "advanced/loaders"
    return_types = ("CLIP",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "clip_name": (env.model_names("text_encoders"),),
                "type": (list(CLIP_TYPES),),
            },
            "optional": {"device": (list(CLIP_DEVICES), {"advanced": True})},
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        device = "cpu" if inputs.get("device") == "cpu" else "cuda:0"
        disk_line = (
            f"CLIP/text encoder model load device: {device}, offload device: cpu, "
            "current: cpu, dtype: torch.float16"
        )
        await ctx.load_model(inputs["clip_name"], [disk_line])
        return NodeOutput((ClipHandle(inputs["clip_name"]),))


class VAELoader(Node):
    class_type = "VAELoader"
    display_name = "Load VAE"
    category = "loaders"
    return_types = ("VAE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"vae_name": (vae_choices(env),)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        await ctx.load_model(inputs["vae_name"], ["Using pytorch attention in VAE"])
        return NodeOutput((VaeHandle(inputs["vae_name"]),))


def vae_choices(env: NodeEnv) -> list[str]:
    """The vae files, then the tiny autoencoders of vae_approx, then "pixel_space"."""
    approx = env.model_names("vae_approx")
    halves = {name.split(".", 1)[0] for name in approx}
    paired = [t for t in IMAGE_TAES if {f"{t}_encoder", f"{t}_decoder"} <= halves]
    videos = [name for name in approx if name.startswith(VIDEO_TAES) and not _image_half(name)]
    return [*env.model_names("vae"), *videos, *paired, PIXEL_SPACE]


def _image_half(name: str) -> bool:
    return any(name.startswith((f"{t}_encoder.", f"{t}_decoder.")) for t in IMAGE_TAES)


class ModelSamplingAuraFlow(Node):
    class_type = "ModelSamplingAuraFlow"
    category = "advanced/model"
    python_module = "comfy_extras.nodes_model_advanced"
    return_types = ("MODEL",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        shift = {"default": 1.73, "min": 0.0, "max": 100.0, "step": 0.01}
        return {"required": {"model": ("MODEL",), "shift": ("FLOAT", shift)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        model: ModelHandle = inputs["model"]
        return NodeOutput((model,))


class EmptySD3LatentImage(Node):
    class_type = "EmptySD3LatentImage"
    category = "latent/sd3"
    python_module = "comfy_extras.nodes_sd3"
    schema_v3 = True
    return_types = ("LATENT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "width": v3_int(1024, min=16, max=MAX_RESOLUTION, step=16),
                "height": v3_int(1024, min=16, max=MAX_RESOLUTION, step=16),
                "batch_size": v3_int(1, min=1, max=4096),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        # A 16-channel latent at 1/8 of the pixel size: sides are floored to multiples of 8
        # (the widget's step of 16 is a hint the API does not enforce).
        width, height = inputs["width"] // 8 * 8, inputs["height"] // 8 * 8
        return NodeOutput((Latent(width, height, inputs["batch_size"], channels=16),))


SPLIT_MODEL_NODES: tuple[type[Node], ...] = (
    UNETLoader,
    CLIPLoader,
    VAELoader,
    ModelSamplingAuraFlow,
    EmptySD3LatentImage,
)
