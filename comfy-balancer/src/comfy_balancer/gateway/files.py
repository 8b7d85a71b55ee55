"""``GET /view``, ``POST /upload/image`` and ``POST /upload/mask`` over the output store.

``/view?filename&subfolder&type``: an output is found by the prompt its subfolder names
(``naming``), which must be the caller's, and among that prompt's recorded outputs by name,
node subfolder and type: served from the output store (``ETag``, ranges), whether or not its
node still lives; an output recorded but never stored comes from the node holding it, and
so does one the running prompt announced but has not stored yet (``live``). A
``type=input`` file (and any file no prompt's subfolder names) is one of the caller's
uploads. ComfyUI's answers otherwise: 400 for an empty name, one with ``..`` or starting with
``/``, or an unknown type; 403 for a subfolder that climbs out; 404 for anything not found,
another user's files included (saying they exist would say too much). ``preview=webp|jpeg
[;quality]`` re-encodes an image, ``channel=rgb|a`` keeps its colour or its alpha, as ComfyUI
does for its mask editor.

Uploads are checked before they are stored: an image (PNG, JPEG, WebP by signature) within
``--max-image-bytes`` and ``--max-image-pixels`` and whole (a PNG's chunks), or a video or
audio file by its extension within ``--max-body-bytes``; anything else is refused (400).
"""

from __future__ import annotations

import asyncio
import io
import json
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from starlette.background import BackgroundTask
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from comfy_balancer.api.routes.tasks import _from_node
from comfy_balancer.errors import NodeUnavailable
from comfy_balancer.gateway.errors import UploadRefused
from comfy_balancer.gateway.identity import GatewayUser
from comfy_balancer.gateway.live import LiveOutputs
from comfy_balancer.gateway.naming import find_output, node_location
from comfy_balancer.gateway.uploads import (
    FOLDERS,
    InvalidUploadName,
    Upload,
    UploadName,
    Uploads,
)
from comfy_balancer.lifespan import BalancerState
from comfy_balancer.service_client import NodeUnreachable
from comfy_shared.api.request_limits import RequestLimits
from comfy_shared.models import OutputKind, TaskOutput, TaskRecord
from comfy_shared.outputs.media import kind_of, media_type_of
from comfy_shared.outputs.serving import OutputExpired, serve_stored
from comfy_shared.outputs.store import OutputStore, attachment_disposition
from comfy_shared.workflows import IMAGE_SIGNATURES, read_image_size

MAX_FORM_PARTS: Final = 16
MAX_REENCODE_BYTES: Final = 64 * 1024 * 1024
"""Largest stored image ``preview`` or ``channel`` re-encodes (larger: served as it is)."""
_PREVIEW_FORMATS: Final = {"webp": "WEBP", "jpeg": "JPEG"}


def _status(code: int) -> Response:
    """ComfyUI's bare answers of /view and /upload: a status, no body."""
    return Response(status_code=code)


async def view(
    request: Request, state: BalancerState, user: GatewayUser, uploads: Uploads
) -> Response:
    query = request.query_params
    filename = query.get("filename")
    if filename is None:
        return _status(404)
    folder = query.get("type", "output")
    for annotation in FOLDERS:
        if filename.endswith(f" [{annotation}]"):
            filename, folder = filename.removesuffix(f" [{annotation}]"), annotation
    if not filename or filename.startswith("/") or ".." in filename or folder not in FOLDERS:
        return _status(400)
    subfolder = query.get("subfolder", "")
    try:
        name = UploadName.of(filename, subfolder, folder)
    except InvalidUploadName:
        return _status(403)
    found = await _find(state, uploads, user, name, request.headers)
    if found is None:
        return _status(404)
    return await _transformed(found, query.get("preview"), query.get("channel"))


async def _find(
    state: BalancerState,
    uploads: Uploads,
    user: GatewayUser,
    name: UploadName,
    headers: Mapping[str, str],
) -> Response | None:
    if name.folder != "input" and (location := node_location(name.subfolder)) is not None:
        record = await state.store.find(location.prompt_id)
        if record is not None and record.tenant == user.tenant:
            index = find_output(record.outputs, name.name, location.subfolder, name.folder)
            if index is not None:
                return await _output(state, record, index, headers)
            if not record.status.is_terminal and await live_outputs(state).announced(
                record.id, name.folder, location.subfolder, name.name
            ):
                return await _announced(state, record, name, location.subfolder)
    upload = await uploads.find(user.tenant, name)
    if upload is None:
        return None
    return await _stored(state.outputs, "upload", _as_output(name, upload), headers)


async def _output(
    state: BalancerState, record: TaskRecord, index: int, headers: Mapping[str, str]
) -> Response | None:
    output = record.outputs[index]
    if output.sha256 is None:
        return await _from_node(state, record.id, index, record.node_id)
    if not await state.catalog.is_held(record.id):
        return None  # its retention ended
    return await _stored(state.outputs, record.id, output, headers, index)


async def _stored(
    store: OutputStore,
    record_id: str,
    output: TaskOutput,
    headers: Mapping[str, str],
    index: int = 0,
) -> Response | None:
    try:
        return await serve_stored(store, record_id, index, output, headers)
    except OutputExpired:
        return None


def live_outputs(state: BalancerState) -> LiveOutputs:
    return LiveOutputs(state.redis, state.keys, retention_s=state.settings.retention_s)


async def _announced(
    state: BalancerState, record: TaskRecord, name: UploadName, node_subfolder: str
) -> Response | None:
    """A file the running prompt announced, from its node (None: the node has no such file
    or no longer runs the task)."""
    node = await state.registry.find(record.node_id or "")
    if node is None or node.url is None:
        raise NodeUnavailable(record.node_id, "it holds the file and publishes no health")
    upstream = AsyncExitStack()
    try:
        answer = await upstream.enter_async_context(
            state.nodes_client.file(node.url, record.id, name.folder, name.name, node_subfolder)
        )
    except NodeUnreachable as exc:
        raise NodeUnavailable(record.node_id, str(exc)) from exc
    if answer.status_code != 200:
        await upstream.aclose()
        return None
    return StreamingResponse(
        answer.aiter_bytes(),
        media_type=media_type_of(name.name),
        headers={"Content-Disposition": attachment_disposition(name.name)},
        background=BackgroundTask(upstream.aclose),
    )


def _as_output(name: UploadName, upload: Upload) -> TaskOutput:
    return TaskOutput(
        node_id="",
        kind=kind_of(name.name),
        filename=name.name,
        subfolder=name.subfolder,
        type=name.folder,
        sha256=upload.sha256,
        size=upload.size,
    )


async def _transformed(response: Response, preview: str | None, channel: str | None) -> Response:
    """ComfyUI's ``preview`` and ``channel`` of an image; anything else as it is."""
    if (preview is None and channel in (None, "rgba")) or response.status_code != 200:
        return response
    media_type = response.headers.get("content-type", "")
    size = int(response.headers.get("content-length", MAX_REENCODE_BYTES + 1))
    if not media_type.startswith("image/") or size > MAX_REENCODE_BYTES:
        return response
    data = await _body_of(response)
    encoded, encoded_type = await asyncio.to_thread(_reencode, data, preview, channel or "")
    return Response(encoded, media_type=encoded_type)


async def _body_of(response: Response) -> bytes:
    """The whole body of a streamed answer, its upstream closed after (its background)."""
    try:
        return b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    finally:
        if response.background is not None:
            await response.background()


def _reencode(data: bytes, preview: str | None, channel: str) -> tuple[bytes, str]:
    """``channel``: as asked ("" when not: a preview keeps the alpha then)."""
    with Image.open(io.BytesIO(data)) as image:
        picture = image.convert("RGBA")
    if channel == "rgb":
        picture = picture.convert("RGB")
    elif channel == "a":
        alpha = picture.getchannel("A")
        picture = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        picture.putalpha(alpha)
    out = io.BytesIO()
    if preview is None:
        picture.save(out, "PNG")
        return out.getvalue(), "image/png"
    name, _, quality = preview.partition(";")
    target = _PREVIEW_FORMATS.get(name, "WEBP")
    if target == "JPEG" and "a" in channel:
        target = "WEBP"  # JPEG has no alpha: ComfyUI falls back to WebP too
    if target == "JPEG":
        picture = picture.convert("RGB")
    picture.save(out, target, quality=int(quality) if quality.isdigit() else 90)
    return out.getvalue(), f"image/{target.lower()}"


# --- uploads ------------------------------------------------------------------------------------


async def upload(
    request: Request, state: BalancerState, user: GatewayUser, uploads: Uploads, *, mask: bool
) -> Response:
    """``/upload/image`` (``mask``: ``/upload/mask``): ComfyUI's ``{name, subfolder, type}``."""
    limits: RequestLimits = request.app.state.request_limits
    async with _form(request, limits) as form:
        part = form.get("image")
        if not isinstance(part, UploadFile) or not part.filename:
            return _status(400)
        wanted = UploadName.of(
            part.filename.replace("\\", "/").rpartition("/")[2],
            _text(form, "subfolder"),
            _text(form, "type") or "input",
        )
        data = await part.read()
        original_ref = _text(form, "original_ref") if mask else ""
        overwrite = _text(form, "overwrite").lower() in ("true", "1")
    _check_upload(wanted.name, data, limits)
    if mask:
        original = await _original(state, uploads, user, original_ref)
        if original is None:
            return JSONResponse(wanted.answer())  # ComfyUI stores nothing then, and says 200
        data = await asyncio.to_thread(_masked, original, data)
    saved = await uploads.save(user.tenant, wanted, data, overwrite=overwrite)
    return JSONResponse(saved.answer())


@asynccontextmanager
async def _form(request: Request, limits: RequestLimits) -> AsyncIterator[FormData]:
    """The multipart body, parsed with bounds; a body that does not parse: 400."""
    reader = request.form(
        max_files=MAX_FORM_PARTS,
        max_fields=MAX_FORM_PARTS,
        max_part_size=limits.max_string_bytes,
    )
    try:
        async with reader as form:
            yield form
    except HTTPException as exc:
        if exc.status_code != 400:
            raise  # the body limits (413, 408) answer as they are
        raise UploadRefused(f"the multipart body cannot be parsed: {exc.detail}") from exc


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _check_upload(name: str, data: bytes, limits: RequestLimits) -> None:
    """Raises UploadRefused unless ``data`` is a whole image within the limits, or a video or
    audio file."""
    extension = next((ext for sig, ext in IMAGE_SIGNATURES.items() if data.startswith(sig)), None)
    if extension == "webp" and data[8:12] != b"WEBP":
        extension = None
    if extension is None:
        if kind_of(name) in (OutputKind.VIDEO, OutputKind.AUDIO):
            return
        raise UploadRefused(f"{name!r} is not a PNG, JPEG or WebP image, a video or a sound")
    images = limits.images
    if len(data) > images.max_bytes:
        raise UploadRefused(f"image of {len(data)} bytes is larger than {images.max_bytes}")
    try:
        width, height = read_image_size(data, extension)
    except ValueError as exc:
        raise UploadRefused(f"invalid image: {exc}") from exc
    if width * height > images.max_pixels:
        raise UploadRefused(
            f"image of {width}x{height} pixels is larger than {images.max_pixels} pixels"
        )


async def _original(
    state: BalancerState, uploads: Uploads, user: GatewayUser, reference: str
) -> bytes | None:
    """The bytes of the image ``original_ref`` names (a JSON string: ComfyUI's ``filename``,
    ``subfolder``, ``type``, default ``output``), the caller's own; None if there is none."""
    try:
        ref: Any = json.loads(reference)
        name = UploadName.of(
            str(ref["filename"]), str(ref.get("subfolder", "")), str(ref.get("type", "output"))
        )
    except (ValueError, KeyError, TypeError, InvalidUploadName):
        raise UploadRefused("original_ref must be a JSON object naming the original") from None
    found = await _find(state, uploads, user, name, {})
    if found is None or found.status_code != 200:
        return None
    return await _body_of(found)


def _masked(original: bytes, mask: bytes) -> bytes:
    """The original with the mask's alpha as its own, as a PNG keeping the original's text
    chunks (the workflow ComfyUI saved in it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(original)) as source:
            info = {str(k): v for k, v in source.info.items() if isinstance(v, str)}
            picture = source.convert("RGBA")
        with Image.open(io.BytesIO(mask)) as layer:
            alpha = layer.convert("RGBA").getchannel("A")
    if alpha.size != picture.size:
        alpha = alpha.resize(picture.size)
    picture.putalpha(alpha)
    metadata = PngInfo()
    for key, value in info.items():
        metadata.add_text(key, value)
    out = io.BytesIO()
    picture.save(out, "PNG", pnginfo=metadata)
    return out.getvalue()
