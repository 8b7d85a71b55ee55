"""Files through the gateway on a real cluster: uploads kept per user and staged to the node
that runs the prompt, outputs served by their recorded location (after their node died too),
ComfyUI's answers to bad /view requests."""

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image
from redis.asyncio import Redis

from comfy_balancer.gateway.live import LiveOutputs
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs
from comfy_testkit.cluster import Cluster
from comfy_testkit.waiting import wait_for_condition


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def png(color: tuple[int, ...], size: tuple[int, int] = (16, 12), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG")
    return out.getvalue()


def load_image_graph(image: str, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"])


async def upload(api: httpx.AsyncClient, name: str, data: bytes, **fields: str) -> httpx.Response:
    return await api.post("/upload/image", files={"image": (name, data, "image/png")}, data=fields)


async def history_of(api: httpx.AsyncClient, prompt_id: str) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        history: dict[str, Any] = (await api.get(f"/history/{prompt_id}")).json()
        return history.get(prompt_id)

    return await wait_for_condition(ended, timeout_s=30, what=f"history of {prompt_id}")


async def view(api: httpx.AsyncClient, file: dict[str, Any], **extra: str) -> httpx.Response:
    return await api.get(
        "/view", params={k: file[k] for k in ("filename", "subfolder", "type")} | extra
    )


async def test_an_upload_is_named_as_comfyui_names_it_and_served_back(cluster: Cluster) -> None:
    api = cluster.api
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    name = f"{fresh('photo')}.png"
    first = await upload(api, name, red, overwrite="true")
    assert first.json() == {"name": name, "subfolder": "", "type": "input"}
    assert (await upload(api, name, red)).json()["name"] == name  # same bytes: same name
    renamed = (await upload(api, name, blue)).json()["name"]
    assert renamed == name.replace(".png", " (1).png")
    assert (await upload(api, name, blue, overwrite="1")).json()["name"] == name
    nested = await api.post(
        "/api/upload/image",
        files={"image": (name, red, "image/png")},
        data={"subfolder": "up/sub", "type": "input"},
    )
    assert nested.json() == {"name": name, "subfolder": "up/sub", "type": "input"}

    served = await api.get("/view", params={"filename": name, "type": "input"})
    assert (served.status_code, served.content) == (200, blue)
    nested_file = {"filename": name, "subfolder": "up/sub", "type": "input"}
    assert (await view(api, nested_file)).content == red
    annotated = await api.get("/view", params={"filename": f"{renamed} [input]"})
    assert annotated.content == blue

    assert (await api.post("/upload/image", data={"type": "input"})).status_code == 400
    not_image = await upload(api, "notes.png", b"just some text")
    assert (not_image.status_code, not_image.json()["error"]["type"]) == (400, "invalid_upload")
    climbing = await upload(api, name, red, subfolder="../escape")
    assert climbing.status_code == 400


async def test_a_prompt_naming_an_upload_runs_on_a_node_and_its_output_is_served(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a", "b"])  # uploaded before anyone knows which node runs it
    api = cluster.api
    await cluster.nodes_ready(2)
    name = f"{fresh('source')}.png"
    await upload(api, name, png((10, 200, 30)), subfolder="mine")
    graph = load_image_graph(f"mine/{name}", fresh("loaded"))
    prompt_id = (await api.post("/prompt", json={"prompt": graph})).json()["prompt_id"]

    entry = await history_of(api, prompt_id)

    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["prompt"][2] == graph  # shown as sent: the caller's own file name
    [image] = entry["outputs"]["3"]["images"]
    served = await view(api, image)
    assert served.status_code == 200
    with Image.open(io.BytesIO(served.content)) as picture:
        assert picture.convert("RGB").getpixel((0, 0)) == (245, 55, 225)  # inverted
    staged = (await api.get(f"/api/v1/tasks/{prompt_id}")).json()
    assert staged["client"]["comfyui_staged"] == {
        key: f"mine/{name}" for key in staged["client"]["comfyui_staged"]
    }
    assert len(staged["client"]["comfyui_staged"]) == 1

    never_uploaded = load_image_graph("nobody-sent-this.png", fresh("missing"))
    missing = (await api.post("/prompt", json={"prompt": never_uploaded})).json()["prompt_id"]
    refused = await history_of(api, missing)
    assert refused["status"]["status_str"] == "error"  # ComfyUI's own validation on the node


async def test_a_mask_takes_its_original_from_the_store(cluster: Cluster) -> None:
    api = cluster.api
    await cluster.nodes_ready(1)
    prompt_id = (
        await api.post("/prompt", json={"prompt": graphs.solid_image(fresh("masked"))})
    ).json()["prompt_id"]
    [original] = (await history_of(api, prompt_id))["outputs"]["3"]["images"]
    mask = png((0, 0, 0, 90), size=(64, 64), mode="RGBA")
    answer = await api.post(
        "/upload/mask",
        files={"image": ("clipspace-mask.png", mask, "image/png")},
        data={"type": "input", "subfolder": "clipspace", "original_ref": json.dumps(original)},
    )
    assert answer.json() == {
        "name": "clipspace-mask.png",
        "subfolder": "clipspace",
        "type": "input",
    }
    stored = await view(
        api, {"filename": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}
    )
    with Image.open(io.BytesIO(stored.content)) as picture:
        assert picture.mode == "RGBA"
        # The mask's alpha on the original's colour (0x3366FF inverted).
        assert picture.getpixel((5, 5)) == (0xCC, 0x99, 0x00, 90)
    alpha = await view(api, original, channel="a")
    with Image.open(io.BytesIO(alpha.content)) as picture:
        assert picture.getchannel("A").getextrema() == (255, 255)  # the output has no alpha
    preview = await view(api, original, preview="jpeg;50")
    assert preview.headers["content-type"] == "image/jpeg"


async def test_an_output_is_served_after_its_node_died(cluster: Cluster) -> None:
    api = cluster.api
    await cluster.nodes_ready(1)
    prompt_id = (
        await api.post("/prompt", json={"prompt": graphs.solid_image(fresh("kept"))})
    ).json()["prompt_id"]
    [image] = (await history_of(api, prompt_id))["outputs"]["3"]["images"]
    before = await view(api, image)
    node_id = (await api.get(f"/api/v1/tasks/{prompt_id}")).json()["node_id"]
    cluster.node(node_id).kill()

    after = await view(api, image)

    assert (after.status_code, after.content) == (200, before.content)
    assert after.headers["content-type"] == "image/png"
    missing = await view(api, image | {"filename": "ComfyUI_00001_.png"})
    assert (missing.status_code, missing.content) == (404, b"")
    assert (await view(api, image | {"subfolder": ""})).status_code == 404  # no prompt named
    assert (await api.get("/view", params={"filename": "../x.png"})).status_code == 400
    assert (await api.get("/view", params={"filename": "x.png", "type": "disk"})).status_code == 400
    escaping = await api.get("/view", params={"filename": "x.png", "subfolder": "../.."})
    assert escaping.status_code == 403


async def test_a_file_a_running_prompt_announced_comes_from_its_node_and_no_other_does(
    cluster: Cluster, redis: Redis
) -> None:
    api = cluster.api
    await cluster.nodes_ready(1)
    earlier = (await api.post("/prompt", json={"prompt": graphs.solid_image(fresh("old"))})).json()
    [old] = (await history_of(api, earlier["prompt_id"]))["outputs"]["3"]["images"]
    quick = fresh("quick")
    graph = graphs.txt2img(fresh("slow"), steps=3000) | _renumbered(graphs.solid_image(quick))
    running = (await api.post("/prompt", json={"prompt": graph})).json()["prompt_id"]
    announced = {"filename": f"{quick}_00001_.png", "subfolder": running, "type": "output"}
    assert (await view(api, announced)).status_code == 404  # not announced (yet)

    # What the WebSocket relay does when it passes the node's executed event on.
    live = LiveOutputs(redis, RedisKeys(), retention_s=600)
    written = {"filename": f"{quick}_00001_.png", "subfolder": "", "type": "output"}
    await live.announce(running, "103", {"images": [written]})

    async def served() -> httpx.Response | None:
        response = await view(api, announced)
        return response if response.status_code == 200 else None

    fetched = await wait_for_condition(served, timeout_s=20, what="the announced file")
    assert fetched.content.startswith(b"\x89PNG")
    assert fetched.headers["content-type"] == "image/png"
    assert (await api.get(f"/api/jobs/{running}")).json()["status"] == "in_progress"
    # Another prompt's file on the same node, under the running prompt's name: never served.
    guessed = {"filename": old["filename"], "subfolder": running, "type": "output"}
    assert (await view(api, guessed)).status_code == 404
    await api.post("/interrupt")


def _renumbered(graph: dict[str, Any]) -> dict[str, Any]:
    """Node ids "1".."3" -> "101".."103" (links too), to sit beside another graph."""
    new = {node_id: f"10{node_id}" for node_id in graph}
    return {
        new[node_id]: node
        | {
            "inputs": {
                name: [new[value[0]], value[1]] if isinstance(value, list) else value
                for name, value in node["inputs"].items()
            }
        }
        for node_id, node in graph.items()
    }
