"""Deterministic stand-in "generations".

A sampled latent carries a `RenderSpec` (everything that would influence a real diffusion run:
model, LoRAs, prompts, seed, sampler settings, size). Decoding renders a picture from a SHA-256 of
that spec: a two-colour gradient, a few translucent shapes and the prompt text. Same spec and batch
index -> same pixels; any change in the spec -> a different picture.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from dataclasses import asdict, dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont


@dataclass(frozen=True)
class RenderSpec:
    width: int
    height: int
    model: str
    loras: tuple[tuple[str, float], ...]
    positive: str
    negative: str
    seed: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    denoise: float
    base: str = ""  # fingerprint of the latent this one was sampled from (hires passes)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def render(spec: RenderSpec, index: int) -> Image.Image:
    """The picture for batch item `index` of a sampled latent."""
    digest = hashlib.sha256(f"{spec.fingerprint()}:{index}".encode()).digest()
    image = _gradient(spec.width, spec.height, digest[0:3], digest[3:6])
    _draw_shapes(image, digest[6:])
    _draw_caption(image, spec, index)
    return image


def _gradient(width: int, height: int, top: bytes, bottom: bytes) -> Image.Image:
    ramp = Image.linear_gradient("L").resize((width, height))
    start = Image.new("RGB", (width, height), (top[0], top[1], top[2]))
    end = Image.new("RGB", (width, height), (bottom[0], bottom[1], bottom[2]))
    return Image.composite(end, start, ramp)


def _draw_shapes(image: Image.Image, seed_bytes: bytes) -> None:
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width, height = image.size
    for n in range(4):
        b = seed_bytes[n * 6 : n * 6 + 6]
        cx, cy = b[0] * width // 255, b[1] * height // 255
        radius = max(2, (b[2] % 64 + 16) * min(width, height) // 160)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        draw.ellipse(box, fill=(b[3], b[4], b[5], 150))
    image.paste(overlay, (0, 0), overlay)


def _draw_caption(image: Image.Image, spec: RenderSpec, index: int) -> None:
    if image.width < 48 or image.height < 24:
        return
    draw = ImageDraw.Draw(image)
    size = max(8, min(image.width, image.height) // 24)
    font = ImageFont.load_default(size=size)
    chars = max(8, image.width // max(1, int(size * 0.6)))
    lines = [*textwrap.wrap(spec.positive, chars)[:4], f"seed {spec.seed} #{index}"]
    draw.multiline_text((4, 4), "\n".join(lines), fill=(255, 255, 255), font=font)


def video_frame(
    start: Image.Image, motion_bucket_id: int, spec: RenderSpec, index: int, count: int
) -> Image.Image:
    """Frame `index` of `count` of an image-to-video run: the start frame pans sideways, by up
    to a quarter of its width at the highest motion bucket (1023), under a veil of the picture
    the spec renders (so seed and settings still show), with a bar along the bottom edge that
    grows with each frame: no two frames are alike, as in a real clip (an encoder may merge
    identical frames, and a clip must keep the number of frames asked for)."""
    progress = index / max(count - 1, 1)
    shift = round(start.width * 0.25 * motion_bucket_id / 1023 * progress)
    moved = ImageChops.offset(start.convert("RGB"), shift, 0)
    frame = Image.blend(moved, render(spec, 0), 0.25)
    bar_height = max(1, frame.height // 32)
    bar = (0, frame.height - bar_height, (index + 1) * frame.width // count - 1, frame.height)
    ImageDraw.Draw(frame).rectangle(bar, fill=(255, 255, 255))
    return frame


def blank_latent_image(width: int, height: int) -> Image.Image:
    """What decoding an all-zero latent looks like (a flat grey-brown)."""
    return Image.new("RGB", (width, height), (124, 117, 106))


def preview_of(final: Image.Image, step: int, total: int, max_size: int = 512) -> Image.Image:
    """A sampler preview: the final picture, blurred less as the steps progress."""
    preview = final.copy()
    preview.thumbnail((max_size, max_size))
    blur = (1 - step / max(total, 1)) * 12
    return preview.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else preview
