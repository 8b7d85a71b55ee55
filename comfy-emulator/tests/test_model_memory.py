"""Model residency: load costs, LRU eviction, ComfyUI's load lines, /system_stats, /free, restart.

Costs are configured per test, so every expected number is computed from the configuration;
times are measured over real HTTP with bounds derived from the configured cost.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from comfy_emulator import RunningEmulator
from comfy_emulator.config import ModelCost
from comfy_emulator.model_memory import (
    FLUX,
    LORA,
    SD15,
    SDXL,
    SVD,
    UNKNOWN_CHECKPOINT,
    VRAM_IN_USE_MB,
    WORKING_RESERVE_MB,
    ModelCatalogue,
    ModelSpec,
    ResidentModels,
    family_of,
)
from comfy_emulator.testing import EmulatorClient, wait_until
from comfy_emulator.workflows import text_to_image

StartEmulator = Callable[..., Awaitable[RunningEmulator]]

SD15_FILE = "v1-5-pruned-emaonly.safetensors"
SD15_FP16_FILE = "v1-5-pruned-emaonly-fp16.safetensors"
SDXL_FILE = "juggernautXL_v8Rundiffusion.safetensors"
MB = 1024 * 1024
REQUESTED = re.compile(r"^Requested to load (\w+)\n$")
LOADED = re.compile(
    r"^loaded completely; (\d+\.\d\d) MB usable, (\d+\.\d\d) MB loaded, full load: True\n$"
)
LOADED_PARTIALLY = re.compile(
    r"^loaded partially; (\d+\.\d\d) MB usable, (\d+\.\d\d) MB loaded, (\d+\.\d\d) MB offloaded, "
    r"0\.00 MB buffer reserved, lowvram patches: 0\n$"
)


def vram_for(models_mb: int) -> int:
    """A vram_total_mb leaving exactly `models_mb` for models."""
    return models_mb + VRAM_IN_USE_MB + WORKING_RESERVE_MB


async def run(client: EmulatorClient, checkpoint: str = SD15_FILE, seed: int = 1) -> float:
    """Run the default text-to-image graph to its end; returns the seconds it took."""
    began = time.monotonic()
    prompt = text_to_image(checkpoint=checkpoint, seed=seed, steps=1)
    prompt_id = (await client.post_prompt(prompt))["prompt_id"]
    history = await client.wait_for_history(prompt_id)
    assert history["status"]["status_str"] == "success"
    return time.monotonic() - began


async def stats(client: EmulatorClient) -> dict[str, Any]:
    result: dict[str, Any] = await client.get_json("/emulator/stats")
    return result


async def log_lines(client: EmulatorClient) -> list[str]:
    raw = await client.get_json("/internal/logs/raw")
    return [entry["m"] for entry in raw["entries"]]


async def vram_free(client: EmulatorClient) -> int:
    (device,) = (await client.get_json("/system_stats"))["devices"]
    free: int = device["vram_free"]
    return free


async def connect(start: StartEmulator, **overrides: Any) -> EmulatorClient:
    """A client of a new emulator with these config overrides (the fixture stops it)."""
    return EmulatorClient((await start(**overrides)).url)


# ---- the cost table and the resident set, without a server ----------------------------------


@pytest.mark.parametrize(
    ("folder", "file", "family"),
    [
        ("checkpoints", "juggernautXL_v8Rundiffusion.safetensors", SDXL),
        ("checkpoints", "sd_xl_base_1.0.safetensors", SDXL),
        ("checkpoints", "v1-5-pruned-emaonly-fp16.safetensors", SD15),
        ("checkpoints", "flux1-dev-fp8.safetensors", FLUX),
        ("checkpoints", "svd_xt.safetensors", SVD),
        ("checkpoints", "dreamshaper_8.safetensors", UNKNOWN_CHECKPOINT),
        ("loras", "add-detail-xl.safetensors", LORA),
    ],
)
def test_default_family_by_file_name(folder: str, file: str, family: Any) -> None:
    assert family_of(folder, file) == family


def spec_of(catalogue: ModelCatalogue, file: str) -> ModelSpec:
    spec = catalogue.spec(file)
    assert spec is not None, f"{file} is not installed"
    return spec


def test_configured_costs_override_the_family_default() -> None:
    models = {"checkpoints": (SDXL_FILE, SD15_FILE), "unet": ("flux1-dev.safetensors",)}
    catalogue = ModelCatalogue(models, {SD15_FILE: ModelCost(3.5, 2500)})
    assert spec_of(catalogue, SD15_FILE).cost == ModelCost(3.5, 2500)
    assert spec_of(catalogue, SDXL_FILE).cost == SDXL.cost
    # A file listed under a legacy folder name belongs to the new folder's family rules.
    assert spec_of(catalogue, "flux1-dev.safetensors").family == FLUX
    assert catalogue.spec("pixel_space") is None


def test_least_recently_used_model_is_evicted_first() -> None:
    costs = dict.fromkeys("abc", ModelCost(1.0, 1000))
    catalogue = ModelCatalogue({"checkpoints": ("a", "b", "c")}, costs)
    resident = ResidentModels(budget_mb=2000)
    for file in ("a", "b"):
        resident.admit(spec_of(catalogue, file))
    assert resident.touch("a")
    load = resident.admit(spec_of(catalogue, "c"))
    assert (load.evicted, load.partial, resident.files()) == (("b",), False, ["a", "c"])
    assert resident.used_mb() == 2000


# ---- over HTTP ---------------------------------------------------------------------------


async def test_cold_load_pays_its_cost_and_a_second_run_pays_nothing(start: StartEmulator) -> None:
    cost_s, scale = 40.0, 0.02  # 0.8 s paid
    client = await connect(
        start, model_costs={SD15_FILE: ModelCost(cost_s, 2000)}, load_scale=scale
    )
    async with client:
        cold = await run(client)
        warm = await run(client, seed=2)  # the sampler runs again, the model is resident
        result = await stats(client)
    assert cold >= cost_s * scale
    assert cold < cost_s * scale + 5.0  # generous: a busy host
    assert warm < cost_s * scale
    assert result["model_loads"] == {SD15_FILE: 1}
    assert result["load_seconds"] == pytest.approx(cost_s * scale)
    assert result["resident"] == [SD15_FILE]


async def test_loader_executed_again_without_the_cache_pays_nothing(start: StartEmulator) -> None:
    client = await connect(start, cache_enabled=False)
    async with client:
        await run(client)
        await run(client)
        result = await stats(client)
    assert result["node_runs"]["CheckpointLoaderSimple"] == 2
    assert result["model_loads"] == {SD15_FILE: 1}


async def test_least_recently_used_model_is_the_one_loaded_again(start: StartEmulator) -> None:
    files = (SD15_FILE, SD15_FP16_FILE, SDXL_FILE)
    costs = {file: ModelCost(1.0, 1000) for file in files}
    client = await connect(start, model_costs=costs, vram_total_mb=vram_for(2500))
    a, b, c = files
    async with client:
        for checkpoint in (a, b, a, c, a, b):  # c evicts b (least recent), then b evicts c
            await run(client, checkpoint)
        result = await stats(client)
    assert result["model_loads"] == {a: 1, b: 2, c: 1}
    assert result["resident"] == [a, b]


async def test_a_cached_loader_whose_model_was_unloaded_pays_again(start: StartEmulator) -> None:
    client = await connect(start)
    async with client, client.websocket("c") as ws:
        await run(client)
        await client.post_json("/free", {"unload_models": True})
        prompt_id = (await client.post_prompt(text_to_image(seed=2, steps=1), client_id="c"))[
            "prompt_id"
        ]
        events = await ws.wait_done(prompt_id)
        result = await stats(client)
        lines = await log_lines(client)
    cached = next(m["data"]["nodes"] for m in events if m["type"] == "execution_cached")
    assert "4" in cached  # the loader did not run ...
    assert result["model_loads"] == {SD15_FILE: 2}  # ... and the model was loaded again
    # The second load is only a move to the GPU: no disk lines again.
    assert sum(line.startswith("model_type ") for line in lines) == 1
    assert lines.count("Requested to load BaseModel\n") == 2


async def test_speed_factor_scales_the_load(start: StartEmulator) -> None:
    cost_s, scale, speed = 20.0, 0.04, 4.0
    client = await connect(
        start, model_costs={SD15_FILE: ModelCost(cost_s, 2000)}, load_scale=scale
    )
    async with client:
        await client.post_json("/emulator/speed", {"speed": speed})
        elapsed = await run(client)
        result = await stats(client)
    assert result["load_seconds"] == pytest.approx(cost_s * scale / speed)
    assert cost_s * scale / speed <= elapsed < cost_s * scale  # 0.2 s paid, not 0.8 s


async def test_load_lines_match_comfyui_and_name_the_size(start: StartEmulator) -> None:
    budget_mb, sdxl_mb, sd15_mb = 12000, 6543, 2222
    costs = {SDXL_FILE: ModelCost(8.0, sdxl_mb), SD15_FILE: ModelCost(2.0, sd15_mb)}
    client = await connect(start, model_costs=costs, vram_total_mb=vram_for(budget_mb))
    async with client:
        await run(client, SDXL_FILE)
        await run(client, SD15_FILE)
        lines = await log_lines(client)
    requested = [m.group(1) for line in lines if (m := REQUESTED.match(line))]
    loaded = [(float(m[1]), float(m[2])) for line in lines if (m := LOADED.match(line))]
    assert requested == ["SDXL", "BaseModel"]
    assert loaded == [(budget_mb, sdxl_mb), (budget_mb - sdxl_mb, sd15_mb)]
    first = lines.index("Requested to load SDXL\n")
    assert lines[first - 3 : first] == [
        "model weight dtype torch.float16, manual cast: None\n",
        "model_type EPS\n",
        "Using pytorch attention in VAE\n",
    ]


async def test_a_model_larger_than_the_vram_loads_partially(start: StartEmulator) -> None:
    budget_mb, size_mb = 2500, 3000
    costs = {SD15_FILE: ModelCost(1.0, size_mb), SDXL_FILE: ModelCost(1.0, 1000)}
    client = await connect(start, model_costs=costs, vram_total_mb=vram_for(budget_mb))
    async with client:
        await run(client, SDXL_FILE)
        await run(client, SD15_FILE)  # evicts everything, then still runs
        lines = await log_lines(client)
        result = await stats(client)
        free = await vram_free(client)
    (partial,) = [m for line in lines if (m := LOADED_PARTIALLY.match(line))]
    usable, loaded, offloaded = (float(partial[i]) for i in (1, 2, 3))
    assert (usable, loaded, offloaded) == (budget_mb, budget_mb, size_mb - budget_mb)
    assert result["resident"] == [SD15_FILE]
    assert free == WORKING_RESERVE_MB * MB  # only the working reserve is left


async def test_vram_free_drops_by_the_model_size(start: StartEmulator) -> None:
    client = await connect(start)
    async with client:
        idle = await vram_free(client)
        await run(client, SDXL_FILE)
        loaded = await vram_free(client)
    assert idle == (24564 - VRAM_IN_USE_MB) * MB  # as a fresh emulator always reported
    assert idle - loaded == SDXL.cost.vram_mb * MB


async def test_free_unloads_at_once_when_idle(start: StartEmulator) -> None:
    client = await connect(start)
    async with client:
        idle = await vram_free(client)
        await run(client)
        status, _ = await client.post_json("/free", {"unload_models": True})
        assert status == 200
        assert (await stats(client))["resident"] == []
        assert await vram_free(client) == idle
        await run(client, seed=2)
        assert (await stats(client))["model_loads"] == {SD15_FILE: 2}
        async with client.session.post(client.base_url + "/free", data=b"") as response:
            assert response.status == 500  # no body, as ComfyUI


async def test_free_waits_for_the_running_prompt(start: StartEmulator) -> None:
    client = await connect(start)
    async with client:
        await run(client)
        await client.post_json("/emulator/hang-next", {"count": 1})
        prompt_id = (await client.post_prompt(text_to_image(seed=2, steps=1)))["prompt_id"]
        await client.wait_running(prompt_id)
        await client.post_json("/free", {"free_memory": True})
        assert (await stats(client))["resident"] == [SD15_FILE]  # not while it runs
        await client.post_json("/emulator/release")
        await client.wait_for_history(prompt_id)

        async def unloaded() -> bool:
            return not (await stats(client))["resident"]

        await wait_until(unloaded)
        await run(client, seed=3)
        result = await stats(client)
    assert result["model_loads"] == {SD15_FILE: 2}


async def test_restart_empties_the_vram(start: StartEmulator) -> None:
    client = await connect(start)
    async with client:
        idle = await vram_free(client)
        await run(client)
        await client.post_json("/emulator/restart")
        assert (await stats(client))["resident"] == []
        assert await vram_free(client) == idle
        await run(client)
        result = await stats(client)
    assert result["model_loads"] == {SD15_FILE: 2}


async def test_stats_reset_keeps_the_resident_models(start: StartEmulator) -> None:
    client = await connect(start)
    async with client:
        await run(client)
        await client.post_json("/emulator/stats/reset")
        result = await stats(client)
    assert (result["model_loads"], result["load_seconds"]) == ({}, 0.0)
    assert result["resident"] == [SD15_FILE]
