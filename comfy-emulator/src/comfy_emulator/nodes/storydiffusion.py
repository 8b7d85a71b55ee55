"""Stand-ins for the StoryDiffusion custom nodes (github.com/smthemex/ComfyUI_StoryDiffusion).

The three classes its "story_text2img" example graph needs, with the object_info the real ones
declare (input names, types, defaults, bounds, combo options; python_module and category of the
pack):

- `StoryDiffusion_Apply` (MODEL, VAE -> MODEL, DIFFCONDI "switch"): picks the infer mode and
  the optional PhotoMaker / adapter files (combos list the `photomaker` model folder).
- `StoryDiffusion_CLIPTextEncode`: parses `role_text` ("[Name] description" per line) and
  `scene_text` (one scene per line, each naming a character as "[Name]", "[NC]" = nobody) the
  way the pack does, and returns per-scene prompts, the negative prompt, a DIFFINFO
  "condition" and the width/height to build the latent from.
- `StoryDiffusion_KSampler`: one generation per scene, `steps` steps each; every step takes
  `step_time / speed` and reports progress over all scenes (`value = scene * steps + step`,
  `max = scenes * steps`), honouring interrupts. Its LATENT already holds one rendered picture
  per scene (seeded by the checkpoint, scene prompt, seed, size and settings; every character of
  the scene is drawn as a figure whose colours come from its description, so it looks the same
  in every scene), hence VAEDecode -> SaveImage writes one PNG per scene.

Only the checkpoint-based modes "story" and "classic" are emulated: the other modes load model
repositories (Flux, Kolors, Qwen-Image, ...) this emulator does not have, so they fail when run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

from comfy_emulator.nodes.base import (
    ExecContext,
    ImageBatch,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
)
from comfy_emulator.nodes.models import (
    _KSAMPLER_TOOLTIPS,
    SAMPLERS,
    SCHEDULERS,
    ClipHandle,
    Conditioning,
    Latent,
    ModelHandle,
    _tqdm_line,
)
from comfy_emulator.nodes.render import RenderSpec, preview_of, render

PYTHON_MODULE = "custom_nodes.ComfyUI_StoryDiffusion"
CATEGORY = "Storydiffusion"
MAX_SEED = 2**31 - 1  # the pack caps seeds at numpy's int32 maximum, not ComfyUI's 2**64 - 1

INFER_MODES = [
    "story",
    "classic",
    "flux_pulid",
    "infiniteyou",
    "uno",
    "realcustom",
    "instant_character",
    "dreamo",
    "qwen_image",
    "flux_omi",
    "bagel_edit",
    "story_maker",
    "story_and_maker",
    "consistory",
    "kolor_face",
    "msdiffusion",
]
EMULATED_MODES = ("story", "classic")
QUANTIZE_MODES = ["fp8", "nf4", "fp16"]
STYLES = [
    "No_style",
    "Realistic",
    "Japanese_Anime",
    "Digital_Oil_Painting",
    "Pixar_Disney_Character",
    "Photographic",
    "Comic_book",
    "Line_art",
    "Black_and_White_Film_Noir",
    "Isometric_Rooms",
]
DEFAULT_ROLE_TEXT = (
    "[Taylor] a woman img, wearing a white T-shirt, blue loose hair.\n"
    "[Lecun] a man img,wearing a suit,black hair."
)
DEFAULT_SCENE_TEXT = (
    "[Taylor] wake up in the bed ;\n[Taylor] have breakfast by the window;\n"
    "[Lecun] driving a car;\n[Lecun] is working."
)
DEFAULT_NEGATIVE = (
    "bad anatomy, bad hands, missing fingers, extra fingers,three hands, three legs, bad arms, "
    "missing legs, missing arms, poorly drawn face, bad face, fused face, cloned face, three "
    "crus, fused feet, fused thigh, extra crus, ugly fingers, horn,amputation, disconnected limbs"
)
_TAG = re.compile(r"\[(.*?)\]")


# ---- values flowing between the nodes -------------------------------------------------------


@dataclass(frozen=True)
class StorySwitch:
    """DIFFCONDI: the infer mode and adapter files chosen in StoryDiffusion_Apply."""

    infer_mode: str
    photomaker: str  # "none" or a file of the photomaker folder
    ipadapter: str
    lora_scale: float


@dataclass(frozen=True)
class Scene:
    prompt: str  # tags replaced by the characters' descriptions, pos_text appended
    characters: tuple[str, ...]  # descriptions of who appears ("[NC]" scenes: nobody)


@dataclass(frozen=True)
class StoryPrompts:
    """The positive CONDITIONING of StoryDiffusion_CLIPTextEncode: one prompt per scene."""

    scenes: tuple[Scene, ...]
    clip: ClipHandle


@dataclass(frozen=True)
class StoryCondition:
    """DIFFINFO: what the sampler needs besides the prompts."""

    switch: StorySwitch
    style: str
    reference: str  # digest of the reference images; "" for text to image


# ---- parsing role_text and scene_text like the pack -----------------------------------------


def parse_roles(role_text: str) -> dict[str, str]:
    """`{"[Name]": description}` from lines like "[Name] description"; others are ignored."""
    roles: dict[str, str] = {}
    for line in role_text.splitlines():
        start, end = line.find("["), line.find("]")
        if start == -1 or end == -1:
            continue
        key = line[start : end + 1]
        if key in roles:
            raise ValueError(f"duplicate character description: {key}")
        roles[key] = _without_caption(line[end + 1 :]).strip()
    if not roles:
        raise ValueError("role_text needs at least one line like '[Name] description'")
    return roles


def parse_scenes(scene_text: str, roles: dict[str, str], pos_text: str) -> tuple[Scene, ...]:
    """One Scene per line that names one character (or [NC]), in order."""
    lines = [line.strip() for line in scene_text.splitlines() if "[" in line]
    # Lines naming two characters are drawn only by the dual-character modes (msdiffusion,
    # story_and_maker); "story" and "classic" leave them out, as the pack does.
    single = [line for line in lines if len(_TAG.findall(line)) < 2]
    if not single:
        raise ValueError("scene_text has no scene: write one scene per line, each with a [Name]")
    if any("[NC]" in line for line in single[: len(roles)]):
        # The first scenes define the characters' looks, so they must show a character.
        raise ValueError(f"the first {len(roles)} scene line(s) cannot be [NC] scenes")
    return tuple(_scene(_without_caption(line), roles, pos_text) for line in single)


def _scene(line: str, roles: dict[str, str], pos_text: str) -> Scene:
    present = [key for key in roles if key in line]
    prompt = line.replace("[NC]", "")
    for key in present:
        prompt = prompt.replace(key, roles[key] + " ")
    return Scene(prompt + pos_text, tuple(roles[key] for key in present))


def _without_caption(text: str) -> str:
    # Text after the last "#" is the caption the pack's comic layout prints, not prompt text.
    return text.rpartition("#")[0] if "#" in text else text


# ---- StoryDiffusion_Apply ---------------------------------------------------------------------


class StoryDiffusionApply(Node):
    class_type = "StoryDiffusion_Apply"
    display_name = "StoryDiffusion_Apply"
    category = CATEGORY
    python_module = PYTHON_MODULE
    return_types = ("MODEL", "DIFFCONDI")
    return_names = ("model", "switch")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        adapters = env.model_names("photomaker")
        photomakers = [name for name in adapters if "v1" in name or "v2" in name]
        lora_scale = {"default": 0.8, "min": 0.1, "max": 1.0, "step": 0.1}
        return {
            "required": {
                "model": ("MODEL",),
                "vae": ("VAE",),
                "infer_mode": (list(INFER_MODES),),
                "photomake_ckpt": (["none", *photomakers],),
                "ipadapter_ckpt": (["none", *adapters],),
                "quantize_mode": (list(QUANTIZE_MODES),),
                "lora_scale": ("FLOAT", lora_scale),
                "extra_function": ("STRING", {"default": ""}),
            },
            "optional": {
                "info": ("STORY_CONDITIONING_1",),
                "CLIP_VISION": ("CLIP_VISION",),
            },
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        mode = str(inputs["infer_mode"])
        ctx.log(f"infer model is {mode}")
        if mode not in EMULATED_MODES:
            raise RuntimeError(
                f"infer_mode {mode!r} needs model repositories this emulator does not have; "
                f"emulated modes: {', '.join(EMULATED_MODES)}"
            )
        for adapter in (inputs["photomake_ckpt"], inputs["ipadapter_ckpt"]):
            if adapter != "none":
                await ctx.load_model(str(adapter))
        switch = StorySwitch(
            mode,
            str(inputs["photomake_ckpt"]),
            str(inputs["ipadapter_ckpt"]),
            float(inputs["lora_scale"]),
        )
        return NodeOutput((inputs["model"], switch))


# ---- StoryDiffusion_CLIPTextEncode ------------------------------------------------------------


class StoryDiffusionCLIPTextEncode(Node):
    class_type = "StoryDiffusion_CLIPTextEncode"
    display_name = "StoryDiffusion_CLIPTextEncode"
    category = CATEGORY
    python_module = PYTHON_MODULE
    return_types = ("CONDITIONING", "CONDITIONING", "DIFFINFO", "INT", "INT")
    return_names = ("positive", "negative", "condition", "width", "height")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        side = {"default": 768, "min": 256, "max": 2048, "step": 16, "display": "number"}
        unit = {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.1, "round": 0.01}
        guidance = "0., 0.25, 0.4, 0.75;0.6, 0.25, 1., 0.75"
        return {
            "required": {
                "clip": ("CLIP",),
                "switch": ("DIFFCONDI",),
                "width": ("INT", side),
                "height": ("INT", side),
                "role_text": ("STRING", {"multiline": True, "default": DEFAULT_ROLE_TEXT}),
                "scene_text": ("STRING", {"multiline": True, "default": DEFAULT_SCENE_TEXT}),
                "pos_text": ("STRING", {"multiline": True, "default": ",best"}),
                "neg_text": ("STRING", {"multiline": True, "default": DEFAULT_NEGATIVE}),
                "lora_trigger_words": ("STRING", {"default": "best quality"}),
                "add_style": (list(STYLES),),
                "mask_threshold": ("FLOAT", unit),
                "extra_param": ("STRING", {"default": ""}),
                "guidance_list": ("STRING", {"multiline": True, "default": guidance}),
            },
            "optional": {"image": ("IMAGE",), "control_image": ("IMAGE",)},
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        switch: StorySwitch = inputs["switch"]
        clip: ClipHandle = inputs["clip"]
        image: ImageBatch | None = inputs.get("image")
        if image is not None and switch.infer_mode == "story" and switch.photomaker == "none":
            raise RuntimeError("story img2img needs a PhotoMaker v1 or v2 file in photomake_ckpt")
        roles = parse_roles(str(inputs["role_text"]))
        scenes = parse_scenes(str(inputs["scene_text"]), roles, str(inputs["pos_text"]))
        reference = _digest(image) if image is not None else ""
        condition = StoryCondition(switch, str(inputs["add_style"]), reference)
        negative = Conditioning(str(inputs["neg_text"]), clip)
        width, height = inputs["width"], inputs["height"]
        return NodeOutput((StoryPrompts(scenes, clip), negative, condition, width, height))


def _digest(images: ImageBatch) -> str:
    sha = hashlib.sha256()
    for image in images:
        sha.update(image.convert("RGB").tobytes())
    return sha.hexdigest()


# ---- StoryDiffusion_KSampler ------------------------------------------------------------------


class StoryDiffusionKSampler(Node):
    class_type = "StoryDiffusion_KSampler"
    display_name = "StoryDiffusion_KSampler"
    description = (
        "Uses the provided model, positive and negative conditioning to denoise the latent image."
    )
    category = CATEGORY
    python_module = PYTHON_MODULE
    return_types = ("LATENT",)
    output_tooltips = ("The denoised latent.",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        # The pack reuses the core KSampler's tooltips.
        t = {name: {"tooltip": text} for name, text in _KSAMPLER_TOOLTIPS.items()}
        cfg = {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}
        degree = {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.1, "round": 0.01}
        denoise = {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL", t["model"]),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, **t["seed"]}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, **t["steps"]}),
                "cfg": ("FLOAT", {**cfg, **t["cfg"]}),
                "sampler_name": (list(SAMPLERS), t["sampler_name"]),
                "scheduler": (list(SCHEDULERS), t["scheduler"]),
                "positive": ("CONDITIONING", t["positive"]),
                "negative": ("CONDITIONING", t["negative"]),
                # Verbatim from the pack, typos included (object_info must match).
                "condition": ("DIFFINFO", {"tooltip": "Switch infer mode witch your chocie."}),
                "latent_image": ("LATENT", t["latent_image"]),
                "sa32_degree": ("FLOAT", degree),
                "sa64_degree": ("FLOAT", degree),
                "denoise": ("FLOAT", {**denoise, **t["denoise"]}),
            }
        }

    async def execute(self, ctx: ExecContext, inputs: Inputs) -> NodeOutput:
        latent: Latent = inputs["latent_image"]
        prompts: StoryPrompts = inputs["positive"]
        specs = [scene_spec(inputs, latent, scene.prompt) for scene in prompts.scenes]
        characters = [scene.characters for scene in prompts.scenes]
        images = await ctx.run_sync(render_scenes, specs, characters)
        await _sample(ctx, images, int(inputs["steps"]))
        # The pictures ride in `pixels`, which VAEDecode hands out as they are.
        return NodeOutput((Latent(latent.width, latent.height, len(images), pixels=images),))


def scene_spec(inputs: Inputs, latent: Latent, prompt: str) -> RenderSpec:
    """Everything that would change a real generation of one scene."""
    model: ModelHandle = inputs["model"]
    negative: Conditioning = inputs["negative"]
    condition: StoryCondition = inputs["condition"]
    switch = condition.switch
    # Settings RenderSpec has no field for go into `base`, so they still change the picture.
    extra = (
        f"storydiffusion|{switch.infer_mode}|{switch.photomaker}|{condition.style}|"
        f"{condition.reference}|{inputs['sa32_degree']}|{inputs['sa64_degree']}"
    )
    return RenderSpec(
        width=latent.width,
        height=latent.height,
        model=model.checkpoint,
        loras=model.loras + negative.clip.loras,
        positive=prompt,
        negative=negative.text,
        seed=int(inputs["seed"]),
        steps=int(inputs["steps"]),
        cfg=float(inputs["cfg"]),
        sampler=str(inputs["sampler_name"]),
        scheduler=str(inputs["scheduler"]),
        denoise=float(inputs["denoise"]),
        base=extra,
    )


def render_scenes(
    specs: list[RenderSpec], characters: list[tuple[str, ...]]
) -> tuple[Image.Image, ...]:
    """One picture per scene, with its characters drawn on top."""
    images = []
    for index, (spec, present) in enumerate(zip(specs, characters, strict=True)):
        image = render(spec, index)
        for slot, description in enumerate(present):
            _draw_character(image, description, (slot + 1) / (len(present) + 1))
        images.append(image)
    return tuple(images)


def _draw_character(image: Image.Image, description: str, across: float) -> None:
    """A simple figure coloured by the description: the same character looks alike everywhere."""
    colour = hashlib.sha256(description.encode()).digest()
    width, height = image.size
    unit = max(2, min(width, height) // 12)
    cx = int(width * across)
    top = height - 5 * unit
    draw = ImageDraw.Draw(image)
    draw.ellipse((cx - unit, top, cx + unit, top + 2 * unit), fill=(colour[0], colour[1], 200))
    body = (cx - unit, top + 2 * unit, cx + unit, height - unit // 2)
    draw.rectangle(body, fill=(colour[2], colour[3], colour[4]), outline=(255, 255, 255))


async def _sample(ctx: ExecContext, images: tuple[Image.Image, ...], steps: int) -> None:
    # The pack runs one diffusers pipeline per scene, each with its own tqdm bar.
    total = steps * len(images)
    for scene, image in enumerate(images):
        for step in range(1, steps + 1):
            await ctx.sleep(ctx.step_time)
            preview = preview_of(image, step, steps) if ctx.previews_enabled else None
            await ctx.progress(scene * steps + step, total, preview)
            ctx.write(_tqdm_line(step, steps))


STORYDIFFUSION_NODES: tuple[type[Node], ...] = (
    StoryDiffusionApply,
    StoryDiffusionCLIPTextEncode,
    StoryDiffusionKSampler,
)
