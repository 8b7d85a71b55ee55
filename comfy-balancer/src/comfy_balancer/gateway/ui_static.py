"""ComfyUI's web frontend, served from the pinned ``comfyui-frontend-package``.

The package holds a built single-page app: ``index.html`` and folders of assets whose names
carry a content hash (``assets/index-B2rHQ9Sn.js``). Those hashed files never change under
their name, so browsers may keep them for a year without asking again (``immutable``); every
other file is revalidated (``no-cache``, with the ETag and Last-Modified Starlette sends), so a
new frontend version shows at the next reload. Media types come from one table here rather
than the host's ``mimetypes`` database, which slim images lack or fill differently.

The largest bundles are text of several MB (11 MB for the biggest script): they are sent
gzip-compressed to browsers that accept it, compressed once per process and kept in memory
(at most ``GZIP_CACHE_BYTES``), since a classroom asks for the same few files thirty times.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections import OrderedDict
from importlib.resources import files
from pathlib import Path
from typing import Final

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".cur": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".glb": "model/gltf-binary",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
}
COMPRESSIBLE: Final = frozenset({".html", ".js", ".mjs", ".css", ".json", ".map", ".svg", ".txt"})
IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
GZIP_CACHE_BYTES: Final = 64 * 1024 * 1024
_MIN_GZIP_BYTES: Final = 1024
HASHED_DIR: Final = "assets"
"""Vite's output folder: the only one whose file names carry their content's hash."""
_HASHED_NAME: Final = re.compile(r"-[A-Za-z0-9_-]{8}\.[a-z0-9]+$")
"""Vite's output names: ``<name>-<8 characters of hash>.<ext>`` (``.js.map`` included)."""


def frontend_dir() -> Path:
    """The built frontend inside the installed package."""
    return Path(str(files("comfyui_frontend_package") / "static"))


UNKNOWN_MEDIA_TYPE: Final = "application/octet-stream"


def media_type_of(path: str) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), UNKNOWN_MEDIA_TYPE)


def cache_control_of(path: str, *, hashed_names: bool) -> str:
    """For a file of the folder of hashed names: for good if its name is hashed."""
    name = Path(path).name.removesuffix(".map")
    return IMMUTABLE if hashed_names and _HASHED_NAME.search(name) else REVALIDATE


class GzipCache:
    """Compressed bodies by (path, mtime), least recently used dropped past the limit."""

    def __init__(self, max_bytes: int = GZIP_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bodies: OrderedDict[tuple[str, float], bytes] = OrderedDict()
        self._held = 0

    async def compressed(self, path: str, mtime: float) -> bytes:
        key = (path, mtime)
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
            return body
        # In a thread: compressing 11 MB takes a good part of a second.
        body = await asyncio.to_thread(_gzip_file, path)
        self._keep(key, body)
        return body

    def _keep(self, key: tuple[str, float], body: bytes) -> None:
        if len(body) > self._max_bytes:
            return
        self._bodies[key] = body
        self._held += len(body)
        while self._held > self._max_bytes:
            _, dropped = self._bodies.popitem(last=False)
            self._held -= len(dropped)


def _gzip_file(path: str) -> bytes:
    return gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)


class FrontendFiles(StaticFiles):
    """StaticFiles with the frontend's media types and cache policy, and gzip."""

    def __init__(self, directory: Path, gzip_cache: GzipCache) -> None:
        super().__init__(directory=directory)
        self._gzip = gzip_cache
        self._hashed_names = directory.name == HASHED_DIR

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["cache-control"] = cache_control_of(path, hashed_names=self._hashed_names)
        if not isinstance(response, FileResponse) or response.stat_result is None:
            return response  # 304 Not Modified: headers only
        response.headers["content-type"] = media_type_of(path)
        response.headers["x-content-type-options"] = "nosniff"
        if Path(path).suffix.lower() not in COMPRESSIBLE:
            return response
        response.headers["vary"] = "Accept-Encoding"
        stat = response.stat_result
        if not _accepts_gzip(scope) or stat.st_size < _MIN_GZIP_BYTES:
            return response
        body = await self._gzip.compressed(str(response.path), stat.st_mtime)
        return _gzipped(response, body, head=scope["method"] == "HEAD")


def _gzipped(response: FileResponse, body: bytes, *, head: bool) -> Response:
    """The file's answer with the compressed body: same validators and cache policy."""
    headers = {key: value for key, value in response.headers.items() if key != "content-length"}
    headers["content-encoding"] = "gzip"
    compressed = Response(b"" if head else body, headers=headers)
    compressed.headers["content-length"] = str(len(body))
    return compressed


def _accepts_gzip(scope: Scope) -> bool:
    for part in Headers(scope=scope).get("accept-encoding", "").split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return _quality(params) > 0
    return False


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0
