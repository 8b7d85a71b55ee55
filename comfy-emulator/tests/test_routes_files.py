"""/upload/image, /upload/mask and /view."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfy_emulator import RunningEmulator
from comfy_emulator.testing import EmulatorClient


def png(
    color: Any = "red", size: tuple[int, int] = (6, 4), mode: str = "RGB", text: str = ""
) -> bytes:
    buffer = io.BytesIO()
    info = PngInfo()
    if text:
        info.add_text("prompt", text)
    Image.new(mode, size, color).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _exists(*parts: str) -> bool:
    return Path(*parts).is_file()


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def upload(
    client: EmulatorClient,
    data: bytes | None,
    name: str = "red.png",
    path: str = "/upload/image",
    **fields: str,
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    if data is not None:
        form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    async with client.session.post(client.base_url + path, data=form) as response:
        body = (
            await response.json()
            if response.content_type == "application/json"
            else await response.text()
        )
        return response.status, body


async def get(client: EmulatorClient, query: str) -> tuple[int, str, bytes]:
    async with client.session.get(client.base_url + "/view?" + query) as response:
        return response.status, response.content_type, await response.read()


async def test_same_name_is_renamed_unless_identical_or_overwritten(client: EmulatorClient) -> None:
    assert await upload(client, png("red")) == (
        200,
        {"name": "red.png", "subfolder": "", "type": "input"},
    )
    assert (await upload(client, png("red")))[1]["name"] == "red.png"  # identical: reused
    assert (await upload(client, png("blue")))[1]["name"] == "red (1).png"
    assert (await upload(client, png("green")))[1]["name"] == "red (2).png"
    assert (await upload(client, png("green"), overwrite="true"))[1]["name"] == "red.png"
    status, _, body = await get(client, "filename=red.png&type=input")
    assert status == 200
    assert Image.open(io.BytesIO(body)).getpixel((0, 0)) == (0, 128, 0)


async def test_upload_subfolders_types_and_refusals(
    emulator: RunningEmulator, client: EmulatorClient
) -> None:
    status, body = await upload(client, png(), subfolder="up/sub", type="temp")
    assert (status, body) == (200, {"name": "red.png", "subfolder": "up/sub", "type": "temp"})
    assert _exists(emulator.emulator.services.folders.temp, "up", "sub", "red.png")
    assert (await upload(client, png(), subfolder="../../x"))[0] == 400
    assert await upload(client, None) == (400, "")
    # Without a filename aiohttp sees a plain field, and ComfyUI's `image.file` fails: 500.
    assert (await upload(client, png(), name=""))[0] == 500
    assert (await upload(client, png(), type="models"))[0] == 500


async def test_oversized_bodies_get_413(start: Any) -> None:
    running: RunningEmulator = await start(max_upload_mb=0.001)
    async with EmulatorClient(running.url) as client:
        status, body = await upload(client, b"x" * 4096)
        assert status == 413
        assert body.startswith("Maximum request body size 1049 exceeded")
        assert (await client.get_json("/features"))["max_upload_size"] == 0.001 * 1024 * 1024


async def test_mask_upload_copies_alpha_onto_the_original(client: EmulatorClient) -> None:
    await upload(client, png("red", text="{}"), name="base.png", type="output")
    mask = png((0, 0, 0, 7), mode="RGBA")
    ref = '{"filename": "base.png", "subfolder": "", "type": "output"}'
    status, body = await upload(
        client, mask, name="masked.png", path="/upload/mask", original_ref=ref
    )
    assert (status, body["name"]) == (200, "masked.png")
    _, _, data = await get(client, "filename=masked.png&type=input")
    image = Image.open(io.BytesIO(data))
    assert image.getpixel((0, 0)) == (255, 0, 0, 7)
    assert image.info["prompt"] == "{}"
    assert (await upload(client, mask, name="m2.png", path="/upload/mask"))[0] == 500


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("type=output", 404),
        ("filename=", 400),
        ("filename=/etc/passwd", 400),
        ("filename=../secret.png", 400),
        ("filename=a.png&type=models", 400),
        ("filename=a.png&subfolder=../..", 403),
        ("filename=a.png&subfolder=/etc", 403),
        ("filename=missing.png", 404),
    ],
)
async def test_view_errors(client: EmulatorClient, query: str, status: int) -> None:
    assert (await get(client, query))[0] == status


async def test_view_suffix_preview_and_channels(client: EmulatorClient) -> None:
    await upload(client, png((10, 20, 30, 40), mode="RGBA"), name="a.png", subfolder="s")
    status, kind, raw = await get(client, "filename=a.png [input]&subfolder=s&type=output")
    assert (status, kind) == (200, "image/png")
    assert Image.open(io.BytesIO(raw)).mode == "RGBA"
    _, kind, data = await get(client, "filename=a.png&subfolder=s&type=input&preview=jpeg;50")
    assert kind == "image/jpeg"
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    _, kind, _ = await get(client, "filename=a.png&subfolder=s&type=input&preview=gif")
    assert kind == "image/webp"
    _, _, rgb = await get(client, "filename=a.png&subfolder=s&type=input&channel=rgb")
    assert Image.open(io.BytesIO(rgb)).mode == "RGB"
    _, _, alpha = await get(client, "filename=a.png&subfolder=s&type=input&channel=a")
    assert Image.open(io.BytesIO(alpha)).getpixel((0, 0)) == (0, 0, 0, 40)


async def test_view_headers_and_forced_download(
    emulator: RunningEmulator, client: EmulatorClient
) -> None:
    _write(Path(emulator.emulator.services.folders.output, "page.html"), "<b>x</b>")
    async with client.session.get(client.base_url + "/view?filename=page.html") as response:
        assert response.content_type == "application/octet-stream"
        assert response.headers["Content-Disposition"] == 'filename="page.html"'
