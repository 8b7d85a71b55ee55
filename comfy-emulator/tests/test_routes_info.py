"""Catalogue routes: /system_stats, /object_info, /features, /models, ..."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfy_emulator import RunningEmulator
from comfy_emulator.config import DEFAULT_CHECKPOINTS, MODEL_FOLDERS
from comfy_emulator.nodes import BUILTIN_NODES
from comfy_emulator.testing import EmulatorClient


async def test_system_stats_reports_one_gpu_by_default(client: EmulatorClient) -> None:
    stats = await client.get_json("/system_stats")
    (device,) = stats["devices"]
    assert (device["type"], device["index"]) == ("cuda", 0)
    assert device["name"] == "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync"
    assert device["vram_total"] == 24564 * 1024 * 1024
    assert stats["system"]["comfyui_version"] == "0.8.0"


async def test_system_stats_reports_the_configured_version(start: Any) -> None:
    running: RunningEmulator = await start(comfyui_version="0.26.0")
    async with EmulatorClient(running.url) as client:
        stats = await client.get_json("/system_stats")
        assert stats["system"]["comfyui_version"] == "0.26.0"
        log = await client.get_json("/internal/logs")
    assert "ComfyUI version: 0.26.0" in log


async def test_cpu_device_uses_system_ram(start: Any) -> None:
    running: RunningEmulator = await start(device="cpu")
    async with EmulatorClient(running.url) as client:
        stats = await client.get_json("/system_stats")
    (device,) = stats["devices"]
    assert (device["name"], device["index"]) == ("cpu", None)
    assert device["vram_total"] == stats["system"]["ram_total"]
    assert "--cpu" in stats["system"]["argv"]


async def test_object_info_lists_every_node(client: EmulatorClient) -> None:
    info = await client.get_json("/object_info")
    assert set(info) == {cls.class_type for cls in BUILTIN_NODES}
    assert info["SaveImage"]["output_node"] is True
    assert await client.get_json("/object_info/NoSuchNode") == {}


async def test_models_and_small_routes(client: EmulatorClient) -> None:
    assert await client.get_json("/models") == list(MODEL_FOLDERS)
    assert await client.get_json("/models/checkpoints") == sorted(DEFAULT_CHECKPOINTS)
    assert await client.get_json("/models/vae") == ["ae.safetensors"]
    async with client.session.get(client.base_url + "/models/nope") as response:
        assert (response.status, await response.read()) == (404, b"")
    assert await client.get_json("/embeddings") == []
    assert await client.get_json("/extensions") == []
    assert await client.get_json("/features") == {
        "supports_preview_metadata": True,
        "max_upload_size": 104857600,
        "extension": {"manager": {"supports_v4": True}},
    }


async def test_custom_nodes_web_directories_are_listed_and_served(
    start: Any, tmp_path: Path
) -> None:
    (tmp_path / "pack-b" / "lib").mkdir(parents=True)
    (tmp_path / "pack-b" / "main.js").write_text("console.log('b')")
    (tmp_path / "pack-b" / "lib" / "util.js").write_text("export const x = 1")
    (tmp_path / "pack-b" / "style.css").write_text("p {}")
    (tmp_path / "a pack").mkdir()
    (tmp_path / "a pack" / "a.js").write_text("console.log('a')")
    running: RunningEmulator = await start(web_extensions=tmp_path)
    async with EmulatorClient(running.url) as client:
        assert await client.get_json("/extensions") == [
            "/extensions/a%20pack/a.js",
            "/extensions/pack-b/lib/util.js",
            "/extensions/pack-b/main.js",
        ]
        async with client.session.get(client.base_url + "/extensions/pack-b/lib/util.js") as got:
            assert (got.status, await got.text()) == (200, "export const x = 1")
        # Static files exist only without /api, as in ComfyUI.
        async with client.session.get(client.base_url + "/api/extensions/pack-b/main.js") as got:
            assert got.status == 404


async def test_configured_models_replace_the_defaults(start: Any) -> None:
    models = {"checkpoints": ("b.safetensors", "a.safetensors"), "embeddings": ("easyneg.pt",)}
    running: RunningEmulator = await start(models=models)
    async with EmulatorClient(running.url) as client:
        assert await client.get_json("/models/checkpoints") == ["a.safetensors", "b.safetensors"]
        assert await client.get_json("/embeddings") == ["easyneg"]
        info = await client.get_json("/object_info/CheckpointLoaderSimple")
        assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
            "a.safetensors",
            "b.safetensors",
        ]
