"""Node catalogue: object_info against recordings, and what the Pillow nodes compute."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image

from comfy_emulator.config import default_models
from comfy_emulator.files import make_folders
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import ExecContext, ImageBatch, MaskBatch, Node, NodeEnv
from comfy_emulator.nodes.image import (
    GetImageSize,
    ImageBlend,
    ImageCrop,
    ImageFlip,
    ImageRotate,
    ImageScale,
    RepeatImageBatch,
)
from comfy_emulator.nodes.mask import ImageToMask, MaskToImage, SolidMask
from comfy_emulator.nodes.models import (
    SAMPLERS,
    SCHEDULERS,
    EmptyLatentImage,
    Latent,
    VAEDecode,
    VAEEncode,
)
from comfy_emulator.nodes.render import RenderSpec, render
from comfy_testkit.captures import load_capture

T = TypeVar("T")


class FakeContext(ExecContext):
    """Just enough executor for running one node directly."""

    def __init__(self, env: NodeEnv) -> None:
        self.env = env
        self.prompt_id = "p"
        self.node_id = "7"
        self.prompt = {}
        self.extra_pnginfo = None
        self.metadata_enabled = True
        self.previews_enabled = False
        self.texts: list[str] = []
        self.progress_calls: list[tuple[int, int]] = []

    @property
    def step_time(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        return None

    async def progress(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        self.progress_calls.append((value, total))

    def send_text(self, text: str) -> None:
        self.texts.append(text)

    def log(self, line: str) -> None:
        return None

    def write(self, chunk: str) -> None:
        return None

    def run_sync(self, func: Callable[..., T], *args: Any) -> Awaitable[T]:
        return asyncio.to_thread(func, *args)

    async def load_model(self, file: str, disk_lines: Sequence[str] = ()) -> None:
        return None


@pytest.fixture
def env(tmp_path: Path) -> NodeEnv:
    folders = make_folders(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "tmp"))
    folders.ensure()
    return NodeEnv(folders, default_models())


async def run(node: type[Node], env: NodeEnv, **inputs: Any) -> tuple[Any, ...]:
    return (await node().execute(FakeContext(env), inputs)).values


def marker_image() -> Image.Image:
    """4x2 black image with a red top-left pixel: shows flips and rotations."""
    image = Image.new("RGB", (4, 2))
    image.putpixel((0, 0), (255, 0, 0))
    return image


def red_at(image: Image.Image) -> tuple[int, int]:
    return next(
        (x, y)
        for y in range(image.height)
        for x in range(image.width)
        if image.getpixel((x, y)) == (255, 0, 0)
    )


@pytest.mark.parametrize(
    "capture",
    [
        "02-get-object-info-SaveImage",
        "03-get-object-info-EmptyImage",
        "04-get-object-info-ImageBlur",
    ],
)
def test_object_info_matches_the_recording(env: NodeEnv, capture: str) -> None:
    expected = load_capture(capture)["response"]["body"]
    (name,) = expected
    info = build_registry().object_info(name, env)
    assert _json(info) == expected[name]


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_sampler_lists_match_comfyui() -> None:
    assert len(SAMPLERS) == 44
    assert SAMPLERS[0] == "euler"
    assert SAMPLERS[-1] == "uni_pc_bh2"
    assert SCHEDULERS == [
        "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform",
        "beta", "normal", "linear_quadratic", "kl_optimal",
    ]  # fmt: skip


def test_checkpoint_combo_lists_the_configured_models(env: NodeEnv) -> None:
    info = build_registry().object_info("CheckpointLoaderSimple", env)
    options = info["input"]["required"]["ckpt_name"][0]
    assert "juggernautXL_v8Rundiffusion.safetensors" in options
    assert "v1-5-pruned-emaonly.safetensors" in options


async def test_flip_and_rotate_directions(env: NodeEnv) -> None:
    (vertical,) = await run(
        ImageFlip, env, image=ImageBatch([marker_image()]), flip_method="x-axis: vertically"
    )
    assert red_at(vertical[0]) == (0, 1)
    (mirrored,) = await run(
        ImageFlip, env, image=ImageBatch([marker_image()]), flip_method="y-axis: horizontally"
    )
    assert red_at(mirrored[0]) == (3, 0)
    (rotated,) = await run(
        ImageRotate, env, image=ImageBatch([marker_image()]), rotation="90 degrees"
    )
    assert rotated[0].size == (2, 4)
    assert red_at(rotated[0]) == (1, 0)


async def test_scale_keeps_aspect_when_a_side_is_zero(env: NodeEnv) -> None:
    source = ImageBatch([Image.new("RGB", (300, 200))])
    (scaled,) = await run(
        ImageScale,
        env,
        image=source,
        upscale_method="bilinear",
        width=128,
        height=0,
        crop="disabled",
    )
    assert scaled[0].size == (128, 85)


async def test_crop_clamps_to_the_image(env: NodeEnv) -> None:
    source = ImageBatch([Image.new("RGB", (10, 10))])
    (cropped,) = await run(ImageCrop, env, image=source, width=8, height=8, x=6, y=20)
    assert cropped[0].size == (4, 1)


async def test_repeat_blend_and_size(env: NodeEnv) -> None:
    (batch,) = await run(RepeatImageBatch, env, image=ImageBatch([marker_image()]), amount=3)
    assert len(batch) == 3
    white = ImageBatch([Image.new("RGB", (4, 2), (255, 255, 255))])
    (blended,) = await run(
        ImageBlend, env, image1=batch, image2=white, blend_factor=0.5, blend_mode="normal"
    )
    assert blended[1].getpixel((1, 1)) in ((127, 127, 127), (128, 128, 128))
    context = FakeContext(env)
    out = await GetImageSize().execute(context, {"image": batch})
    assert out.values == (4, 2, 3)
    assert context.texts == ["width: 4, height: 2\n batch size: 3"]


async def test_masks(env: NodeEnv) -> None:
    (mask,) = await run(SolidMask, env, value=0.5, width=3, height=2)
    assert isinstance(mask, MaskBatch)
    assert mask[0].getpixel((0, 0)) == 128
    (image,) = await run(MaskToImage, env, mask=mask)
    assert image[0].getpixel((2, 1)) == (128, 128, 128)
    (green,) = await run(
        ImageToMask, env, image=ImageBatch([Image.new("RGB", (2, 2), (1, 2, 3))]), channel="green"
    )
    assert green[0].getpixel((0, 0)) == 2
    with pytest.raises(IndexError, match="index 3 is out of bounds for dimension 3 with size 3"):
        await run(ImageToMask, env, image=ImageBatch([Image.new("RGB", (2, 2))]), channel="alpha")


def test_render_is_deterministic_and_sensitive() -> None:
    spec = RenderSpec(64, 48, "m.safetensors", (), "a cat", "", 1, 20, 8.0, "euler", "normal", 1.0)
    assert render(spec, 0).tobytes() == render(spec, 0).tobytes()
    assert render(spec, 0).tobytes() != render(spec, 1).tobytes()
    other = RenderSpec(64, 48, "m.safetensors", (), "a cat", "", 2, 20, 8.0, "euler", "normal", 1.0)
    assert render(spec, 0).tobytes() != render(other, 0).tobytes()
    assert render(spec, 0).size == (64, 48)


async def test_latents_are_multiples_of_eight(env: NodeEnv) -> None:
    (latent,) = await run(EmptyLatentImage, env, width=100, height=70, batch_size=2)
    assert (latent.width, latent.height, latent.batch_size) == (96, 64, 2)
    (decoded,) = await run(VAEDecode, env, samples=latent, vae=None)
    assert [i.size for i in decoded] == [(96, 64), (96, 64)]
    (encoded,) = await run(
        VAEEncode, env, pixels=ImageBatch([Image.new("RGB", (20, 17))]), vae=None
    )
    assert isinstance(encoded, Latent)
    assert (encoded.width, encoded.height) == (16, 16)
