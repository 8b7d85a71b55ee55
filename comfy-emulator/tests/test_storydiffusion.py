"""The StoryDiffusion stand-ins and the `storydiffusion` workflow template, over real HTTP/WS."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from comfy_emulator import RunningEmulator
from comfy_emulator.nodes.storydiffusion import parse_roles, parse_scenes
from comfy_emulator.testing import EmulatorClient

TEMPLATES = Path(__file__).parents[2] / "shared" / "src" / "comfy_shared" / "templates"
SAMPLER = "352"  # StoryDiffusion_KSampler in the template graph
SAVE = "85"
SCENES = (
    "[Mia] wakes up;\n[Mia] has breakfast;\n\nno tag, ignored\n[Mia] walks in the rain #caption"
)

# Input names of the real node classes (smthemex/ComfyUI_StoryDiffusion, Storydiffusion_node.py).
REAL_INPUTS = {
    "StoryDiffusion_Apply": (
        [
            "model",
            "vae",
            "infer_mode",
            "photomake_ckpt",
            "ipadapter_ckpt",
            "quantize_mode",
            "lora_scale",
            "extra_function",
        ],
        ["info", "CLIP_VISION"],
    ),
    "StoryDiffusion_CLIPTextEncode": (
        [
            "clip",
            "switch",
            "width",
            "height",
            "role_text",
            "scene_text",
            "pos_text",
            "neg_text",
            "lora_trigger_words",
            "add_style",
            "mask_threshold",
            "extra_param",
            "guidance_list",
        ],
        ["image", "control_image"],
    ),
    "StoryDiffusion_KSampler": (
        [
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "condition",
            "latent_image",
            "sa32_degree",
            "sa64_degree",
            "denoise",
        ],
        [],
    ),
}


def template_graph(**params: Any) -> dict[str, Any]:
    """The template graph with `params` written to their declared targets."""
    graph: dict[str, Any] = json.loads((TEMPLATES / "storydiffusion.json").read_text())
    declared = yaml.safe_load((TEMPLATES / "storydiffusion.yaml").read_text())["params"]
    for name, value in params.items():
        for target in declared[name]["targets"]:
            graph[target["node"]]["inputs"][target["input"]] = value
    return graph


async def run(
    client: EmulatorClient, graph: dict[str, Any], previews: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """Run `graph`; its events, and its binary preview frames appended to `previews`."""
    extra = {"preview_method": "auto" if previews is not None else "none"}
    async with client.websocket("story") as ws:
        prompt_id = (await client.post_prompt(graph, client_id="story", extra_data=extra))[
            "prompt_id"
        ]
        events = await ws.wait_done(prompt_id)
        if previews is not None:
            previews += ws.binary
        return events


async def saved_images(client: EmulatorClient, events: list[dict[str, Any]]) -> list[Image.Image]:
    executed = next(m["data"] for m in events if m["type"] == "executed")
    assert executed["node"] == SAVE
    images = []
    for item in executed["output"]["images"]:
        params = {"filename": item["filename"], "subfolder": item["subfolder"], "type": "output"}
        async with client.session.get(client.base_url + "/view", params=params) as response:
            assert response.status == 200
            assert response.content_type == "image/png"
            images.append(Image.open(io.BytesIO(await response.read())).convert("RGB"))
    return images


async def generate(start: Any, **params: Any) -> list[Image.Image]:
    running: RunningEmulator = await start(step_time=0.001)
    async with EmulatorClient(running.url) as client:
        return await saved_images(client, await run(client, template_graph(**params)))


def test_the_template_declares_its_targets_and_fits_the_graph() -> None:
    declared = yaml.safe_load((TEMPLATES / "storydiffusion.yaml").read_text())["params"]
    assert set(declared) == {"character", "scenes", "width", "height", "steps", "seed"}
    graph = template_graph()
    for spec in declared.values():
        for target in spec["targets"]:
            assert target["input"] in graph[target["node"]]["inputs"]
    assert declared["seed"]["random"] is True
    assert graph[SAVE]["class_type"] == "SaveImage"
    assert graph[SAVE]["inputs"]["filename_prefix"] == "storydiffusion"


async def test_the_template_runs_with_one_png_per_scene_and_real_progress(start: Any) -> None:
    running: RunningEmulator = await start(step_time=0.001)
    graph = template_graph(scenes=SCENES, width=320, height=256, steps=4, seed=7)
    previews: list[bytes] = []
    async with EmulatorClient(running.url) as client:
        events = await run(client, graph, previews)
        images = await saved_images(client, events)
        assert [image.size for image in images] == [(320, 256)] * 3
        assert len(previews) == 12  # one sampler preview per step
        progress = [m["data"] for m in events if m["type"] == "progress"]
        assert [(p["value"], p["max"], p["node"]) for p in progress] == [
            (n, 12, SAMPLER) for n in range(1, 13)
        ]
        logs = await client.get_json("/internal/logs")
        assert "infer model is story" in logs


async def test_the_template_defaults_validate_and_run(start: Any) -> None:
    images = await generate(start, width=256, height=256, steps=1)
    assert len(images) == 4  # the four default scenes


async def test_object_info_has_the_real_inputs(start: Any) -> None:
    photomaker = ("photomaker-v1.bin", "photomaker-v2.bin", "ms_adapter.bin")
    running: RunningEmulator = await start(models={"photomaker": photomaker})
    async with EmulatorClient(running.url) as client:
        for name, (required, optional) in REAL_INPUTS.items():
            info = (await client.get_json(f"/object_info/{name}"))[name]
            assert list(info["input"]["required"]) == required
            assert list(info["input"].get("optional", {})) == optional
            assert (info["category"], info["python_module"]) == (
                "Storydiffusion",
                "custom_nodes.ComfyUI_StoryDiffusion",
            )
        apply = (await client.get_json("/object_info/StoryDiffusion_Apply"))["StoryDiffusion_Apply"]
        inputs = apply["input"]["required"]
        assert inputs["photomake_ckpt"][0] == ["none", "photomaker-v1.bin", "photomaker-v2.bin"]
        assert inputs["ipadapter_ckpt"][0] == ["none", *sorted(photomaker)]
        assert apply["output_name"] == ["model", "switch"]
        sampler = await client.get_json("/object_info/StoryDiffusion_KSampler")
        seed = sampler["StoryDiffusion_KSampler"]["input"]["required"]["seed"][1]
        assert (seed["default"], seed["max"]) == (0, 2**31 - 1)


async def test_seeds_above_the_node_maximum_are_rejected(client: EmulatorClient) -> None:
    status, body = await client.post_json("/prompt", {"prompt": template_graph(seed=2**31)})
    assert status == 400
    (error,) = body["node_errors"][SAMPLER]["errors"]
    assert error["type"] == "value_bigger_than_max"


async def test_generation_is_deterministic(start: Any) -> None:
    settings = {"scenes": SCENES, "width": 256, "height": 256, "steps": 2, "seed": 11}
    first = await generate(start, **settings)
    again = await generate(start, **settings)
    other_seed = await generate(start, **{**settings, "seed": 12})
    assert [i.tobytes() for i in first] == [i.tobytes() for i in again]
    assert len({i.tobytes() for i in first}) == 3  # every scene differs
    assert all(a.tobytes() != b.tobytes() for a, b in zip(first, other_seed, strict=True))


async def test_the_character_looks_the_same_in_every_scene(start: Any) -> None:
    settings = {"scenes": SCENES, "width": 256, "height": 256, "steps": 1, "seed": 3}
    mia = await generate(start, **settings)
    other = await generate(start, **settings, character="[Mia] an old man with a grey beard")
    body = (128, 230)  # the middle of the figure's body (one character: centred, at the bottom)
    assert len({image.getpixel(body) for image in mia}) == 1
    assert mia[0].getpixel(body) != other[0].getpixel(body)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"213": {"infer_mode": "flux_pulid"}}, "infer_mode 'flux_pulid' needs model"),
        ({"78": {"scene_text": "no tags here"}}, "scene_text has no scene"),
        ({"78": {"role_text": "a woman without a tag"}}, "role_text needs at least one line"),
    ],
)
async def test_unusable_settings_fail_at_execution(
    client: EmulatorClient, change: dict[str, dict[str, str]], message: str
) -> None:
    graph = template_graph()
    for node, values in change.items():
        graph[node]["inputs"].update(values)
    events = await run(client, graph)
    error = next(m["data"] for m in events if m["type"] == "execution_error")
    assert error["exception_message"].startswith(message)


def test_scene_parsing_follows_the_pack() -> None:
    roles = parse_roles("[Mia] a girl # caption\nno tag\n[Leo] a boy")
    assert roles == {"[Mia]": "a girl", "[Leo]": "a boy"}
    text = "[Mia] runs;\n[Leo] sits\n[Mia] and [Leo] talk\n[NC] an empty street\nplain line"
    scenes = parse_scenes(text, roles, ",best")
    assert [s.prompt for s in scenes] == [
        "a girl  runs;,best",
        "a boy  sits,best",
        " an empty street,best",
    ]
    assert [s.characters for s in scenes] == [("a girl",), ("a boy",), ()]
    with pytest.raises(ValueError, match="cannot be \\[NC\\]"):
        parse_scenes("[NC] nobody\n[Mia] runs", {"[Mia]": "a girl"}, "")
    with pytest.raises(ValueError, match="duplicate"):
        parse_roles("[Mia] a\n[Mia] b")
