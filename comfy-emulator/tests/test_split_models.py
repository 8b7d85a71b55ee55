"""Split-file model stand-ins: the frontend's default graph runs, object_info is ComfyUI's,
model folders answer as ComfyUI's do (legacy names included)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfy_emulator import RunningEmulator
from comfy_emulator.config import default_models
from comfy_emulator.files import make_folders
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import NodeEnv
from comfy_emulator.nodes.split_models import CLIP_TYPES
from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import frontend_default

JsonDict = dict[str, Any]


def env_with(tmp_path: Path, **models: tuple[str, ...]) -> NodeEnv:
    folders = make_folders(str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "tmp"))
    return NodeEnv(folders, default_models() | models)


async def run_to_image(client: EmulatorClient, graph: JsonDict) -> Image.Image:
    response = await client.post_prompt(graph, client_id="c")
    assert response["node_errors"] == {}
    entry = await client.wait_for_history(response["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    (image,) = entry["outputs"]["9"]["images"]
    async with client.session.get(client.base_url + "/view", params=image) as got:
        assert (got.status, got.content_type) == (200, "image/png")
        return Image.open(io.BytesIO(await got.read()))


async def test_the_frontend_default_graph_renders_a_1024_square_png(
    client: EmulatorClient,
) -> None:
    image = await run_to_image(client, frontend_default(prefix="zimage"))
    assert (image.format, image.size) == ("PNG", (1024, 1024))


async def test_the_diffusion_model_file_reaches_the_picture(start: Any) -> None:
    models = default_models() | {"diffusion_models": ("a.safetensors", "b.safetensors")}
    running: RunningEmulator = await start(models=models)
    pixels = []
    async with EmulatorClient(running.url) as client:
        for name in ("a.safetensors", "a.safetensors", "b.safetensors"):
            graph = frontend_default(width=64, height=64, steps=1, prefix=name)
            graph["66"]["inputs"]["unet_name"] = name
            pixels.append((await run_to_image(client, graph)).convert("RGB").tobytes())
    assert pixels[0] == pixels[1] != pixels[2]


async def test_empty_sd3_latent_floors_its_size_to_the_latent_grid(
    client: EmulatorClient,
) -> None:
    # The widgets step by 16, but the API takes any size and the latent is 1/8 of it.
    image = await run_to_image(client, frontend_default(width=1030, height=100, steps=1))
    assert image.size == (1024, 96)


async def test_a_clip_type_not_in_the_list_is_refused_like_comfyui(
    client: EmulatorClient,
) -> None:
    graph = frontend_default()
    graph["62"]["inputs"]["type"] = "nope"
    status, body = await client.post_json("/prompt", {"prompt": graph})
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    (error,) = body["node_errors"]["62"]["errors"]
    assert (error["type"], error["message"]) == ("value_not_in_list", "Value not in list")
    assert error["details"] == f"type: 'nope' not in {list(CLIP_TYPES)}"
    assert error["extra_info"]["input_name"] == "type"
    assert error["extra_info"]["received_value"] == "nope"
    assert body["node_errors"]["62"]["dependent_outputs"] == ["9"]


async def test_loader_object_info_is_comfyui_s(client: EmulatorClient) -> None:
    info = await client.get_json("/object_info")
    assert info["UNETLoader"] == {
        "input": {
            "required": {
                "unet_name": [["z_image_turbo_bf16.safetensors"]],
                "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]],
            }
        },
        "input_order": {"required": ["unet_name", "weight_dtype"]},
        "output": ["MODEL"],
        "output_is_list": [False],
        "output_name": ["MODEL"],
        "name": "UNETLoader",
        "display_name": "Load Diffusion Model",
        "description": "",
        "python_module": "nodes",
        "category": "advanced/loaders",
        "output_node": False,
    }
    clip = info["CLIPLoader"]
    assert clip["input"]["required"]["clip_name"] == [["qwen_3_4b.safetensors"]]
    assert clip["input"]["required"]["type"] == [list(CLIP_TYPES)]
    assert clip["input"]["optional"] == {"device": [["default", "cpu"], {"advanced": True}]}
    assert (clip["display_name"], clip["category"], clip["output"]) == (
        "Load CLIP",
        "advanced/loaders",
        ["CLIP"],
    )
    assert clip["description"].startswith("[Recipes]\n\nstable_diffusion: clip-l\n")
    assert "lumina2: gemma 2 2B" in clip["description"]
    vae = info["VAELoader"]
    assert vae["input"] == {"required": {"vae_name": [["ae.safetensors", "pixel_space"]]}}
    assert (vae["display_name"], vae["category"], vae["output"]) == ("Load VAE", "loaders", ["VAE"])


def test_clip_types_are_those_of_comfyui_0_8_0() -> None:
    assert len(CLIP_TYPES) == 18
    assert CLIP_TYPES[:4] == ("stable_diffusion", "stable_cascade", "sd3", "stable_audio")
    assert CLIP_TYPES[8] == "lumina2"
    assert CLIP_TYPES[-4:] == ("qwen_image", "hunyuan_image", "flux2", "ovis")


async def test_sampling_and_latent_object_info_is_comfyui_s(client: EmulatorClient) -> None:
    info = await client.get_json("/object_info")
    aura = info["ModelSamplingAuraFlow"]
    assert aura["input"] == {
        "required": {
            "model": ["MODEL"],
            "shift": ["FLOAT", {"default": 1.73, "min": 0.0, "max": 100.0, "step": 0.01}],
        }
    }
    assert (aura["display_name"], aura["category"], aura["python_module"], aura["output"]) == (
        "ModelSamplingAuraFlow",
        "advanced/model",
        "comfy_extras.nodes_model_advanced",
        ["MODEL"],
    )
    side = {"default": 1024, "min": 16, "max": 16384, "step": 16}
    assert info["EmptySD3LatentImage"] == {
        "input": {
            "required": {
                "width": ["INT", side],
                "height": ["INT", side],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            }
        },
        "input_order": {"required": ["width", "height", "batch_size"]},
        "output": ["LATENT"],
        "output_is_list": [False],
        "output_name": ["LATENT"],
        "output_tooltips": [None],
        "output_matchtypes": None,
        "name": "EmptySD3LatentImage",
        "display_name": None,
        "description": "",
        "python_module": "comfy_extras.nodes_sd3",
        "category": "latent/sd3",
        "output_node": False,
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    }


@pytest.mark.parametrize(
    ("approx", "offered"),
    [
        ((), []),
        (("taesd_decoder.pth", "taesd_encoder.pth"), ["taesd"]),
        (("taesdxl_decoder.pth",), []),  # half a pair is not offered
        (
            ("taef1_encoder.safetensors", "taef1_decoder.safetensors", "taehv.safetensors"),
            ["taehv.safetensors", "taef1"],
        ),
        (("lighttaew2_2.safetensors", "notes.pth"), ["lighttaew2_2.safetensors"]),
    ],
)
def test_vae_loader_offers_the_tiny_autoencoders_of_vae_approx(
    tmp_path: Path, approx: tuple[str, ...], offered: list[str]
) -> None:
    env = env_with(tmp_path, vae_approx=approx)
    info = build_registry().object_info("VAELoader", env)
    assert info["input"]["required"]["vae_name"] == (["ae.safetensors", *offered, "pixel_space"],)


def test_clip_and_unet_are_legacy_names_of_text_encoders_and_diffusion_models(
    tmp_path: Path,
) -> None:
    env = env_with(tmp_path, clip=("clip_l.safetensors",), unet=("flux1-dev.safetensors",))
    encoders = ["clip_l.safetensors", "qwen_3_4b.safetensors"]
    assert env.model_names("text_encoders") == env.model_names("clip") == encoders
    diffusion = ["flux1-dev.safetensors", "z_image_turbo_bf16.safetensors"]
    assert env.model_names("diffusion_models") == env.model_names("unet") == diffusion
    registry = build_registry()
    assert registry.object_info("CLIPLoader", env)["input"]["required"]["clip_name"] == (encoders,)


async def test_model_folders_answer_as_comfyui_s(client: EmulatorClient) -> None:
    assert await client.get_json("/models/diffusion_models") == ["z_image_turbo_bf16.safetensors"]
    assert await client.get_json("/models/text_encoders") == ["qwen_3_4b.safetensors"]
    assert await client.get_json("/models/vae") == ["ae.safetensors"]  # no "pixel_space"
    for legacy in ("clip", "unet"):  # not keys of ComfyUI's folder table
        async with client.session.get(f"{client.base_url}/models/{legacy}") as response:
            assert response.status == 404
