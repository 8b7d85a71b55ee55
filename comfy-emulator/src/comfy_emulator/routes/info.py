"""Read-only catalogue routes: /system_stats, /object_info, /features, /models, ...

/system_stats reports exactly one device: a CUDA GPU by default (name, type "cuda", index 0 and
the configured VRAM, less what the resident models occupy: `vram_free` = total - 512 MB in use
when idle - resident models, never below 0, and torch's reserved pool `torch_vram_total` grows by
the resident models), or the CPU with system RAM as "VRAM" when `device="cpu"`, as ComfyUI does
with `--cpu`. `comfyui_version` is the configured version (0.8.0 unless set).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from comfy_emulator.config import MODEL_FOLDERS, EmulatorConfig
from comfy_emulator.core import device_name, pytorch_version
from comfy_emulator.model_memory import VRAM_IN_USE_MB
from comfy_emulator.routes import Route, emulator_of

_MB = 1024 * 1024


def server_features(config: EmulatorConfig) -> dict[str, Any]:
    """feature_flags.SERVER_FEATURE_FLAGS (max_upload_size stays a float if given as one)."""
    return {
        "supports_preview_metadata": True,
        "max_upload_size": config.max_upload_mb * _MB,
        "extension": {"manager": {"supports_v4": True}},
    }


def _ram() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 32 * 1024 * _MB, 24 * 1024 * _MB


def _device(
    config: EmulatorConfig, ram_total: int, ram_free: int, resident_mb: int
) -> dict[str, Any]:
    if config.device == "cpu":
        return {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": ram_total,
            "vram_free": ram_free,
            "torch_vram_total": ram_total,
            "torch_vram_free": ram_free,
        }
    total = config.vram_total_mb * _MB
    return {
        "name": device_name(config),
        "type": "cuda",
        "index": 0,
        "vram_total": total,
        "vram_free": max(0, total - (VRAM_IN_USE_MB + resident_mb) * _MB),
        "torch_vram_total": (256 + resident_mb) * _MB,
        "torch_vram_free": 128 * _MB,
    }


def _argv(config: EmulatorConfig, port: int) -> list[str]:
    argv = ["main.py", "--listen", config.host, "--port", str(port)]
    return [*argv[:1], "--cpu", *argv[1:]] if config.device == "cpu" else argv


async def system_stats(request: web.Request) -> web.Response:
    emulator = emulator_of(request)
    config = emulator.config
    ram_total, ram_free = _ram()
    system = {
        "os": sys.platform,
        "ram_total": ram_total,
        "ram_free": ram_free,
        "comfyui_version": config.comfyui_version,
        "required_frontend_version": "1.35.9",
        "installed_templates_version": "0.7.67",
        "required_templates_version": "0.7.67",
        "python_version": sys.version,
        "pytorch_version": pytorch_version(config),
        "embedded_python": False,
        "argv": _argv(config, emulator.bound_port or config.port),
    }
    device = _device(config, ram_total, ram_free, emulator.state.models.used_mb())
    return web.json_response({"system": system, "devices": [device]})


async def object_info(request: web.Request) -> web.Response:
    services = emulator_of(request).services
    registry = services.registry
    return web.json_response({n: registry.object_info(n, services.env) for n in registry.names()})


async def object_info_one(request: web.Request) -> web.Response:
    services = emulator_of(request).services
    name = request.match_info["node_class"]
    if name not in services.registry:
        return web.json_response({})
    return web.json_response({name: services.registry.object_info(name, services.env)})


async def features(request: web.Request) -> web.Response:
    return web.json_response(server_features(emulator_of(request).config))


async def embeddings(request: web.Request) -> web.Response:
    names = emulator_of(request).config.model_names("embeddings")
    return web.json_response([os.path.splitext(n)[0] for n in names])


async def model_folders(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_FOLDERS))


async def models_in_folder(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        return web.Response(status=404)
    return web.json_response(emulator_of(request).config.model_names(folder))


async def extensions(request: web.Request) -> web.Response:
    root = emulator_of(request).config.web_extensions
    return web.json_response(extension_urls(root) if root else [])


def extension_urls(root: Path) -> list[str]:
    """As ComfyUI lists a custom node's WEB_DIRECTORY: every .js file below it, by URL."""
    return sorted(
        f"/extensions/{quote(pack.name)}/{script.relative_to(pack).as_posix()}"
        for pack in web_extension_packs(root)
        for script in pack.rglob("*.js")
    )


def web_extension_packs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir())


async def view_metadata(request: web.Request) -> web.Response:
    # The stand-in models are names without files, so there is never safetensors metadata.
    return web.Response(status=404)


async def index(request: web.Request) -> web.Response:
    body = "<!doctype html><title>ComfyUI</title><p>ComfyUI emulator: no frontend is served.</p>"
    return web.Response(text=body, content_type="text/html")


ROUTES: list[Route] = [
    ("GET", "/system_stats", system_stats),
    ("GET", "/object_info", object_info),
    ("GET", "/object_info/{node_class}", object_info_one),
    ("GET", "/features", features),
    ("GET", "/embeddings", embeddings),
    ("GET", "/models", model_folders),
    ("GET", "/models/{folder}", models_in_folder),
    ("GET", "/extensions", extensions),
    ("GET", "/view_metadata/{folder_name}", view_metadata),
]
