"""GET /view and POST /upload/image, /upload/mask (ComfyUI server.py semantics).

/view: 400 for an empty filename, one starting with "/" or containing "..", or an unknown type;
403 when `subfolder` escapes the folder; 404 when the file is missing. A `" [output]"`-style
suffix on the filename picks the folder and overrides `type`. `preview=webp|jpeg[;quality]`
re-encodes; `channel=rgb|a` returns a PNG without alpha / with only alpha.

/upload/image: an existing name is kept when the content is identical (sha256), renamed
`name (1).ext`, `name (2).ext`... when it differs, and replaced with `overwrite=true|1`.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfy_emulator.files import Folders, is_within, split_annotation
from comfy_emulator.routes import Route, emulator_of

_FORCED_DOWNLOAD = {
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "text/css",
}
PostData = Mapping[str, Any]  # request.post(): field name -> str, bytes or FileField

# ComfyUI's server registers WebP itself, so /view names it whatever the machine's mime.types.
mimetypes.add_type("image/webp", ".webp")
Writer = Callable[[bytes, PostData, str], None]  # (uploaded bytes, form, target path)


def _disposition(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'filename="{name}"'}


async def view(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    folders = emulator_of(request).services.folders
    resolved = _resolve_view_path(folders, query)
    if isinstance(resolved, int):
        return web.Response(status=resolved)
    path, name = resolved
    if not _is_file(path):
        return web.Response(status=404)
    if "preview" in query:
        return _preview(path, name, query["preview"], query.get("channel", ""))
    channel = query.get("channel", "rgba")
    if channel in ("rgb", "a"):
        return _channel_png(path, name, channel)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type in _FORCED_DOWNLOAD:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={**_disposition(name), "Content-Type": content_type})


def _resolve_view_path(folders: Folders, query: Any) -> tuple[str, str] | int:
    """(file path, base name) or the error status."""
    name, annotated = split_annotation(query["filename"])
    if not name or name[0] == "/" or ".." in name:
        return 400
    folder = folders.by_type(annotated or query.get("type", "output"))
    if folder is None:
        return 400
    if "subfolder" in query:
        full = os.path.join(folder, query["subfolder"])
        if not is_within(folder, full):
            return 403
        folder = full
    name = os.path.basename(name)
    return os.path.join(folder, name), name


def _is_file(path: str) -> bool:
    return os.path.isfile(path)


def _preview(path: str, name: str, preview: str, channel: str) -> web.Response:
    parts = preview.split(";")
    image_format = parts[0]
    if image_format not in ("webp", "jpeg") or "a" in channel:
        image_format = "webp"
    quality = int(parts[-1]) if parts[-1].isdigit() else 90
    buffer = io.BytesIO()
    with Image.open(path) as image:
        converted = image.convert("RGB") if image_format == "jpeg" or channel == "rgb" else image
        converted.save(buffer, format=image_format, quality=quality)
    return web.Response(
        body=buffer.getvalue(), content_type=f"image/{image_format}", headers=_disposition(name)
    )


def _channel_png(path: str, name: str, channel: str) -> web.Response:
    with Image.open(path) as image:
        if channel == "rgb":
            result = image.convert("RGB")
        else:
            alpha = (
                image.getchannel("A") if image.mode == "RGBA" else Image.new("L", image.size, 255)
            )
            result = Image.new("RGBA", image.size)
            result.putalpha(alpha)
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    return web.Response(
        body=buffer.getvalue(), content_type="image/png", headers=_disposition(name)
    )


async def upload_image(request: web.Request) -> web.Response:
    post = await request.post()
    return _store_upload(emulator_of(request).services.folders, post, _write_plain)


async def upload_mask(request: web.Request) -> web.Response:
    post = await request.post()
    folders = emulator_of(request).services.folders
    return _store_upload(folders, post, lambda f, p, path: _write_mask(folders, f, p, path))


def _upload_dir(folders: Folders, kind: Any) -> tuple[str, str]:
    kind = kind or "input"
    folder = folders.by_type(kind)
    if folder is None:
        # ComfyUI's get_dir_by_type leaves its variable unset here: an internal error (500).
        raise UnboundLocalError(f"upload type {kind!r} is not input, temp or output")
    return folder, str(kind)


def _store_upload(folders: Folders, post: PostData, write: Writer) -> web.Response:
    folder, kind = _upload_dir(folders, post.get("type"))
    image = post.get("image")
    if not image:
        return web.Response(status=400)
    if not isinstance(image, web.FileField):
        # A part without a filename arrives as a plain field; ComfyUI's `image.file` fails (500).
        raise AttributeError(f"{type(image).__name__!r} object has no attribute 'file'")
    if not image.filename:
        return web.Response(status=400)
    subfolder = str(post.get("subfolder", ""))
    target_dir = os.path.join(folder, os.path.normpath(subfolder))
    path = os.path.abspath(os.path.join(target_dir, image.filename))
    if os.path.commonpath((folder, path)) != folder:
        return web.Response(status=400)
    os.makedirs(target_dir, exist_ok=True)
    content = image.file.read()
    filename, path, duplicate = _free_name(
        target_dir, image.filename, content, post.get("overwrite")
    )
    if not duplicate:
        write(content, post, path)
    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})


def _free_name(folder: str, filename: str, content: bytes, overwrite: Any) -> tuple[str, str, bool]:
    """(name, path, is_duplicate): keep identical content, else rename "x (1).png", ..."""
    path = os.path.join(folder, filename)
    if overwrite in ("true", "1"):
        return filename, path, False
    stem, ext = os.path.splitext(filename)
    digest = hashlib.sha256(content).hexdigest()
    counter = 1
    while os.path.exists(path):
        if _sha256_of(path) == digest:
            return filename, path, True
        filename = f"{stem} ({counter}){ext}"
        path = os.path.join(folder, filename)
        counter += 1
    return filename, path, False


def _sha256_of(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _write_plain(content: bytes, post: PostData, path: str) -> None:
    with open(path, "wb") as handle:
        handle.write(content)


def _write_mask(folders: Folders, content: bytes, post: PostData, path: str) -> None:
    """Copy the uploaded alpha onto `original_ref`; nothing is written if that is invalid."""
    ref = json.loads(post["original_ref"])  # missing: an internal error (500), as in ComfyUI
    original = _mask_original(folders, ref)
    if original is None or not os.path.isfile(original):
        return
    with Image.open(original) as source:
        info = PngInfo()
        for key, value in getattr(source, "text", {}).items():
            info.add_text(key, value)
        merged = source.convert("RGBA")
    with Image.open(io.BytesIO(content)) as mask:
        merged.putalpha(mask.convert("RGBA").getchannel("A"))
    merged.save(path, compress_level=4, pnginfo=info)


def _mask_original(folders: Folders, ref: dict[str, Any]) -> str | None:
    name, annotated = split_annotation(str(ref.get("filename", "")))
    if not name or name[0] == "/" or ".." in name:
        return None
    root = folders.by_type(annotated or ref.get("type", "output"))
    if root is None:
        return None
    folder = os.path.join(root, ref["subfolder"]) if ref.get("subfolder") else root
    return os.path.join(folder, name) if is_within(root, folder) else None


ROUTES: list[Route] = [
    ("GET", "/view", view),
    ("POST", "/upload/image", upload_image),
    ("POST", "/upload/mask", upload_mask),
]
