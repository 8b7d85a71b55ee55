"""Model stand-ins for a text-to-image (and img2img) graph.

The object_info of each class matches ComfyUI 0.8.0's, so a workflow exported from the real UI
validates and runs unchanged. The "models" are small handles naming the checkpoint and LoRAs
(the loaders pay a model's load time when it is not resident in the emulated VRAM, see
`model_memory`); KSampler takes `step_time / speed` seconds per step, reports real `progress`
for each step and honours interrupts between steps; VAEDecode renders a deterministic picture
from the sampled latent's `RenderSpec` (see `render.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from PIL import Image

from comfy_emulator.model_memory import checkpoint_disk_lines, family_of
from comfy_emulator.nodes.base import (
    MAX_RESOLUTION,
    ExecContext,
    ImageBatch,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
)
from comfy_emulator.nodes.render import (
    RenderSpec,
    blank_latent_image,
    preview_of,
    render,
    video_frame,
)

# comfy/samplers.py KSampler.SAMPLERS and SCHEDULERS (0.8.0), in order.
SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]


@dataclass(frozen=True)
class ModelHandle:
    checkpoint: str
    loras: tuple[tuple[str, float], ...] = ()

    def model_files(self) -> tuple[str, ...]:
        return (self.checkpoint, *(name for name, _ in self.loras))


@dataclass(frozen=True)
class ClipHandle:
    checkpoint: str
    loras: tuple[tuple[str, float], ...] = ()

    def model_files(self) -> tuple[str, ...]:
        return (self.checkpoint, *(name for name, _ in self.loras))


@dataclass(frozen=True)
class VaeHandle:
    checkpoint: str

    def model_files(self) -> tuple[str, ...]:
        return (self.checkpoint,)


@dataclass(frozen=True)
class Conditioning:
    text: str
    clip: ClipHandle


@dataclass(frozen=True)
class Motion:
    """What a video latent animates: the start frame and the motion settings."""

    start: Image.Image
    motion_bucket_id: int
    fps: int
    augmentation_level: float


@dataclass(frozen=True)
class Latent:
    """A LATENT value: pixel size (multiples of 8), and how it came to be."""

    width: int
    height: int
    batch_size: int
    spec: RenderSpec | None = None  # set once sampled
    parent: Latent | None = None  # what was sampled (img2img / hires source)
    pixels: tuple[Image.Image, ...] = ()  # set by VAEEncode
    motion: Motion | None = None  # set by video conditioning (SVD_img2vid_Conditioning)
    channels: int = 4  # of the latent tensor: 4 for SD1.x/SDXL, 16 for SD3-style models

    def __str__(self) -> str:
        shape = f"[{self.batch_size}, {self.channels}, {self.height // 8}, {self.width // 8}]"
        return f"{{'samples': tensor(shape={shape})}}"


def decode(latent: Latent, index: int) -> Image.Image:
    """VAE decode of one batch item."""
    if latent.spec is None:
        if latent.pixels:
            return latent.pixels[index % len(latent.pixels)].copy()
        return blank_latent_image(latent.width, latent.height)
    if latent.parent is not None and latent.parent.motion is not None:
        motion = latent.parent.motion
        return video_frame(
            motion.start, motion.motion_bucket_id, latent.spec, index, latent.batch_size
        )
    image = render(latent.spec, index)
    if latent.spec.denoise < 1.0 and latent.parent is not None:
        base = decode(latent.parent, index).resize(image.size)
        image = Image.blend(base, image, latent.spec.denoise)
    return image


class CheckpointLoaderSimple(Node):
    class_type = "CheckpointLoaderSimple"
    display_name = "Load Checkpoint"
    description = (
        "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    )
    category = "loaders"
    return_types = ("MODEL", "CLIP", "VAE")
    output_tooltips = (
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
    )

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        tooltip = {"tooltip": "The name of the checkpoint (model) to load."}
        return {"required": {"ckpt_name": (env.model_names("checkpoints"), tooltip)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        name = inputs["ckpt_name"]
        disk_lines = checkpoint_disk_lines(family_of("checkpoints", name))
        await ctx.load_model(name, [*disk_lines, "Using pytorch attention in VAE"])
        return NodeOutput((ModelHandle(name), ClipHandle(name), VaeHandle(name)))


class LoraLoader(Node):
    class_type = "LoraLoader"
    display_name = "Load LoRA"
    description = (
        "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents "
        "are denoised such as applying styles. Multiple LoRA nodes can be linked together."
    )
    category = "loaders"
    return_types = ("MODEL", "CLIP")
    output_tooltips = ("The modified diffusion model.", "The modified CLIP model.")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        def strength(tooltip: str) -> tuple[str, dict[str, object]]:
            opts = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
            return ("FLOAT", {**opts, "tooltip": tooltip})

        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
                "lora_name": (env.model_names("loras"), {"tooltip": "The name of the LoRA."}),
                "strength_model": strength(
                    "How strongly to modify the diffusion model. This value can be negative."
                ),
                "strength_clip": strength(
                    "How strongly to modify the CLIP model. This value can be negative."
                ),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        model: ModelHandle = inputs["model"]
        clip: ClipHandle = inputs["clip"]
        name, s_model, s_clip = (
            inputs["lora_name"],
            inputs["strength_model"],
            inputs["strength_clip"],
        )
        if s_model == 0 and s_clip == 0:
            return NodeOutput((model, clip))  # ComfyUI does not even read the file then
        await ctx.load_model(name)
        model = replace(model, loras=(*model.loras, (name, float(s_model))))
        clip = replace(clip, loras=(*clip.loras, (name, float(s_clip))))
        return NodeOutput((model, clip))


class CLIPTextEncode(Node):
    class_type = "CLIPTextEncode"
    display_name = "CLIP Text Encode (Prompt)"
    description = (
        "Encodes a text prompt using a CLIP model into an embedding that can be used to guide "
        "the diffusion model towards generating specific images."
    )
    category = "conditioning"
    return_types = ("CONDITIONING",)
    output_tooltips = (
        "A conditioning containing the embedded text used to guide the diffusion model.",
    )

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        text = {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}
        clip = {"tooltip": "The CLIP model used for encoding the text."}
        return {"required": {"text": ("STRING", text), "clip": ("CLIP", clip)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        clip = inputs["clip"]
        if clip is None:
            raise RuntimeError(
                "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader "
                "node your checkpoint does not contain a valid clip or text encoder model."
            )
        return NodeOutput((Conditioning(str(inputs["text"]), clip),))


class EmptyLatentImage(Node):
    class_type = "EmptyLatentImage"
    display_name = "Empty Latent Image"
    description = "Create a new batch of empty latent images to be denoised via sampling."
    category = "latent"
    return_types = ("LATENT",)
    output_tooltips = ("The empty latent image batch.",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        def side(what: str) -> tuple[str, dict[str, object]]:
            opts = {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}
            return ("INT", {**opts, "tooltip": f"The {what} of the latent images in pixels."})

        batch = {"default": 1, "min": 1, "max": 4096}
        return {
            "required": {
                "width": side("width"),
                "height": side("height"),
                "batch_size": (
                    "INT",
                    {**batch, "tooltip": "The number of latent images in the batch."},
                ),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        # A latent is 1/8 of the pixel size, so decoded images are multiples of 8.
        width, height = inputs["width"] // 8 * 8, inputs["height"] // 8 * 8
        return NodeOutput((Latent(width, height, inputs["batch_size"]),))


_KSAMPLER_TOOLTIPS = {
    "model": "The model used for denoising the input latent.",
    "seed": "The random seed used for creating the noise.",
    "steps": "The number of steps used in the denoising process.",
    "cfg": (
        "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. "
        "Higher values result in images more closely matching the prompt however too high "
        "values will negatively impact quality."
    ),
    "sampler_name": (
        "The algorithm used when sampling, this can affect the quality, speed, and style of "
        "the generated output."
    ),
    "scheduler": "The scheduler controls how noise is gradually removed to form the image.",
    "positive": "The conditioning describing the attributes you want to include in the image.",
    "negative": "The conditioning describing the attributes you want to exclude from the image.",
    "latent_image": "The latent image to denoise.",
    "denoise": (
        "The amount of denoising applied, lower values will maintain the structure of the "
        "initial image allowing for image to image sampling."
    ),
}


class KSampler(Node):
    class_type = "KSampler"
    display_name = "KSampler"
    description = (
        "Uses the provided model, positive and negative conditioning to denoise the latent image."
    )
    category = "sampling"
    return_types = ("LATENT",)
    output_tooltips = ("The denoised latent.",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        t = {name: {"tooltip": text} for name, text in _KSAMPLER_TOOLTIPS.items()}
        seed = {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}
        cfg = {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}
        denoise = {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL", t["model"]),
                "seed": ("INT", {**seed, **t["seed"]}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, **t["steps"]}),
                "cfg": ("FLOAT", {**cfg, **t["cfg"]}),
                "sampler_name": (list(SAMPLERS), t["sampler_name"]),
                "scheduler": (list(SCHEDULERS), t["scheduler"]),
                "positive": ("CONDITIONING", t["positive"]),
                "negative": ("CONDITIONING", t["negative"]),
                "latent_image": ("LATENT", t["latent_image"]),
                "denoise": ("FLOAT", {**denoise, **t["denoise"]}),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        latent: Latent = inputs["latent_image"]
        spec = sample_spec(inputs, latent)
        steps: int = inputs["steps"]
        first = render(spec, 0) if ctx.previews_enabled else None
        for step in range(1, steps + 1):
            await ctx.sleep(ctx.step_time)
            preview = preview_of(first, step, steps) if first is not None else None
            await ctx.progress(step, steps, preview)
            ctx.write(_tqdm_line(step, steps))
        return NodeOutput((replace(latent, spec=spec, parent=latent, pixels=()),))


def sample_spec(inputs: Inputs, latent: Latent) -> RenderSpec:
    model: ModelHandle = inputs["model"]
    positive: Conditioning = inputs["positive"]
    negative: Conditioning = inputs["negative"]
    return RenderSpec(
        width=latent.width,
        height=latent.height,
        model=model.checkpoint,
        loras=model.loras + positive.clip.loras,
        positive=positive.text,
        negative=negative.text,
        seed=int(inputs["seed"]),
        steps=int(inputs["steps"]),
        cfg=float(inputs["cfg"]),
        sampler=str(inputs["sampler_name"]),
        scheduler=str(inputs["scheduler"]),
        denoise=float(inputs["denoise"]),
        base=latent.spec.fingerprint() if latent.spec is not None else "",
    )


def _tqdm_line(step: int, total: int) -> str:
    done = step * 10 // total
    bar = "█" * done + " " * (10 - done)
    end = "\n" if step == total else ""
    return f"\r{step * 100 // total:3d}%|{bar}| {step}/{total} [00:00<00:00, 20.00it/s]{end}"


class VAEDecode(Node):
    class_type = "VAEDecode"
    display_name = "VAE Decode"
    description = "Decodes latent images back into pixel space images."
    category = "latent"
    return_types = ("IMAGE",)
    output_tooltips = ("The decoded image.",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        latent: Latent = inputs["samples"]
        images = await ctx.run_sync(lambda: [decode(latent, i) for i in range(latent.batch_size)])
        return NodeOutput((ImageBatch(images),))


class VAEEncode(Node):
    class_type = "VAEEncode"
    display_name = "VAE Encode"
    category = "latent"
    return_types = ("LATENT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        images: ImageBatch = inputs["pixels"]
        # The VAE crops pixels to multiples of 8 before encoding.
        width, height = images[0].width // 8 * 8, images[0].height // 8 * 8
        pixels = tuple(i.crop((0, 0, width, height)) for i in images)
        return NodeOutput((Latent(width, height, len(pixels), pixels=pixels),))


MODEL_NODES: tuple[type[Node], ...] = (
    CheckpointLoaderSimple,
    LoraLoader,
    CLIPTextEncode,
    EmptyLatentImage,
    KSampler,
    VAEDecode,
    VAEEncode,
)
