"""Workflow templates end to end: through a service and through the balancer, on emulators."""

import base64
import hashlib
import io
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image, ImageSequence
from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_shared.workflows import DEFAULT_TEMPLATES_DIR, TemplateLibrary
from comfy_testkit.api import wait_for_status, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import outputs_dir_for
from comfy_testkit.waiting import wait_for_condition

SHIPPED = TemplateLibrary.load(DEFAULT_TEMPLATES_DIR)


def png(color: str = "red", size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# Small values so every template runs in well under a second on the emulator.
PARAMS: dict[str, dict[str, Any]] = {
    "demo": {"width": 64, "height": 32, "color": 0x00FF00},
    "txt2img-sdxl": {"prompt": "a lighthouse at dusk", "width": 512, "height": 512, "steps": 4},
    "img2img-sdxl": {
        "prompt": "as an oil painting",
        "steps": 4,
        "image": base64.b64encode(png()).decode(),
    },
    "img2video": {
        "image": base64.b64encode(png()).decode(),
        "frames": 3,
        "width": 64,
        "height": 64,
        "steps": 2,
    },
}


def params_for(name: str) -> dict[str, Any]:
    if name in PARAMS:
        return PARAMS[name]
    template = SHIPPED.get(name)  # e.g. storydiffusion: its defaults, fewer steps if it has them
    return {"steps": 4} if "steps" in template.params else {}


@pytest.fixture
def small_cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(step_time_s=0.002)


@pytest.mark.parametrize("name", SHIPPED.names())
async def test_each_shipped_template_runs_through_the_balancer_and_a_service(
    small_cluster: Cluster, name: str
) -> None:
    body = {"workflow": name, "params": params_for(name)}
    node = small_cluster.nodes[0].service
    node_api = httpx.AsyncClient(base_url=node.url, headers=node.auth_headers, timeout=15)
    async with node_api:
        for api in (small_cluster.api, node_api):
            response = await api.post("/api/v1/generate", json=body)
            assert response.status_code == 202, response.text
            task = await wait_until_finished(api, response.json()["id"], timeout_s=30)
            assert task["status"] == "succeeded", task
            assert task["workflow"] == name
            assert task["outputs"]
            output = task["outputs"][0]
            download = await api.get(output["url"])
            assert download.headers["content-type"] == output["media_type"]
            with Image.open(io.BytesIO(download.content)) as picture:
                assert picture.get_format_mimetype() == output["media_type"]


async def test_img2video_makes_a_clip_of_the_frames_asked_for(small_cluster: Cluster) -> None:
    params = {**PARAMS["img2video"], "frames": 7, "fps": 10, "motion": 600}
    node = small_cluster.nodes[0].service
    node_api = httpx.AsyncClient(base_url=node.url, headers=node.auth_headers, timeout=15)
    async with node_api:
        for api in (small_cluster.api, node_api):
            response = await api.post("/api/v1/generate", json={"workflow": "img2video",
                                                                 "params": params})  # fmt: skip
            assert response.status_code == 202, response.text
            task = await wait_until_finished(api, response.json()["id"], timeout_s=30)
            assert task["status"] == "succeeded", task
            [output] = task["outputs"]
            assert (output["kind"], output["media_type"]) == ("video", "image/webp")
            assert re.fullmatch(r"img2video_\d{5}_\.webp", output["filename"])
            download = await api.get(output["url"])
            assert download.headers["content-type"] == "image/webp"
            assert clip_frames(download.content) == [(64, 64, 100)] * 7  # 1000 ms / 10 fps


def clip_frames(data: bytes) -> list[tuple[int, int, int]]:
    """(width, height, duration in ms) of every frame of an animated image."""
    frames = []
    with Image.open(io.BytesIO(data)) as clip:
        for frame in ImageSequence.Iterator(clip):
            frame.load()  # WebP reads a frame's duration as it decodes it
            frames.append((frame.width, frame.height, int(frame.info["duration"])))
    return frames


async def test_an_unset_seed_is_random_and_reported_by_the_balancer(small_cluster: Cluster) -> None:
    body = {
        "workflow": "txt2img-sdxl",
        "params": {"prompt": "x", "steps": 2, "width": 512, "height": 512},
    }
    first = (await small_cluster.api.post("/api/v1/generate", json=body)).json()
    second = (await small_cluster.api.post("/api/v1/generate", json=body)).json()
    assert first["params"]["seed"] != second["params"]["seed"]
    done = await wait_until_finished(small_cluster.api, first["id"])
    assert done["params"]["seed"] == first["params"]["seed"]  # the node used the same seed


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"workflow": "nope"}, "unknown_workflow", None),
        ({"workflow": "demo", "params": {"colour": 1}}, "invalid_params", "colour"),
        ({"workflow": "demo", "params": {"width": "wide"}}, "invalid_params", "width"),
        ({"workflow": "demo", "params": {"width": 1}}, "invalid_params", "width"),
        ({"workflow": "img2img-sdxl", "params": {"prompt": "x"}}, "invalid_params", "image"),
        ({"workflow": "img2video", "params": {"frames": 49}}, "invalid_params", "frames"),
    ],
)
async def test_bad_template_requests_are_422_naming_the_field(
    small_cluster: Cluster, body: dict[str, Any], code: str, field: str | None
) -> None:
    node = small_cluster.nodes[0].service
    async with httpx.AsyncClient(base_url=node.url, headers=node.auth_headers) as node_api:
        for api in (small_cluster.api, node_api):
            response = await api.post("/api/v1/generate", json=body)
            assert (response.status_code, response.json()["code"]) == (422, code)
            if field:
                assert field in response.json()["errors"]
                assert f"params.{field}" in response.json()["detail"]


async def test_a_multipart_image_reaches_the_node_privately_and_is_blanked_after(
    small_cluster: Cluster,
) -> None:
    """The node uploads the image under an unguessable name, its LoadImage reads it, and once
    the task is over the staged file is blanked (ComfyUI has no delete)."""
    for node in small_cluster.nodes:
        await node.control.hang_next(1)  # keep the task running while we look
    picture = png("blue", (50, 40))
    response = await small_cluster.api.post(
        "/api/v1/generate",
        data={"request": '{"workflow": "img2img-sdxl", "params": {"prompt": "x", "steps": 2}}'},
        files={"image": ("photo.png", picture, "image/png")},
    )
    assert response.status_code == 202, response.text
    running = await wait_for_status(small_cluster.api, response.json()["id"], {"running"})
    node = small_cluster.node(running["node_id"])
    await node.control.wait_hung()
    prompt_id = running["attempt_log"][-1]["prompt_id"] or running["id"]
    async with httpx.AsyncClient(base_url=node.emulator.url) as comfy:
        queued = (await comfy.get("/queue")).json()["queue_running"][0]
        image_input = queued[2]["10"]["inputs"]["image"]
        view = {"filename": image_input.split("/")[-1], "subfolder": "comfy-stack", "type": "input"}
        while_running = (await comfy.get("/view", params=view)).content
        for other in small_cluster.nodes:
            await other.control.release()
        task = await wait_until_finished(small_cluster.api, running["id"])

        async def blanked() -> bool:
            # The service blanks the file right after it recorded the end, not before.
            after = (await comfy.get("/view", params=view)).content
            with Image.open(io.BytesIO(after)) as image:
                return image.size == (1, 1)

        await wait_for_condition(blanked, timeout_s=10, what="the staged input blanked")

    assert task["status"] == "succeeded"
    assert task["params"]["image"].startswith("<png image")
    assert re.fullmatch(r"comfy-stack/[0-9a-f]{32}\.png", image_input)
    assert queued[1] == prompt_id
    assert while_running == picture


async def test_workflows_are_listed_with_a_json_schema(small_cluster: Cluster) -> None:
    listed = (await small_cluster.api.get("/api/v1/workflows")).json()
    assert [w["name"] for w in listed] == SHIPPED.names()
    one = (await small_cluster.api.get("/api/v1/workflows/txt2img-sdxl")).json()
    assert one["parameters"]["properties"]["steps"]["type"] == "integer"
    missing = await small_cluster.api.get("/api/v1/workflows/nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "workflow_not_found")


@pytest.fixture
async def image_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A web server on loopback serving ``/in.png``; the list records each path asked for."""
    asked: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=png("blue"), content_type="image/png")

    app = web.Application()
    app.router.add_get("/in.png", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", asked
    await runner.cleanup()


async def test_an_image_given_by_url_is_fetched_once_when_the_request_arrives(
    make_cluster: Callable[..., Cluster], image_server: tuple[str, list[str]]
) -> None:
    server, asked = image_server
    cluster = make_cluster(
        ["a"], step_time_s=0.002, balancer_args=["--url-inputs-allow", "127.0.0.1"]
    )

    async def generate(image: str) -> httpx.Response:
        params = {"prompt": "x", "steps": 2, "image": image}
        return await cluster.api.post(
            "/api/v1/generate", json={"workflow": "img2img-sdxl", "params": params}
        )

    accepted = await generate(f"{server}/in.png")
    private = await generate("https://10.1.2.3/in.png")  # not allow-listed: never called

    assert accepted.status_code == 202, accepted.text
    done = await wait_until_finished(cluster.api, accepted.json()["id"])
    assert done["status"] == "succeeded", done
    assert asked == ["/in.png"]
    assert (private.status_code, private.json()["code"]) == (422, "invalid_params")
    assert "could not fetch the image" in private.json()["errors"]["image"]


async def test_an_image_sent_with_many_tasks_is_stored_once_and_let_go_when_they_end(
    make_cluster: Callable[..., Cluster],
    image_server: tuple[str, list[str]],
    redis: Redis,
    process_log_dir: Path,
) -> None:
    """Inputs live in the output store, content-addressed, while their tasks do: Redis keeps
    a reference per task, not the bytes; the sweep deletes them once every task ended."""
    server, _ = image_server
    cluster = make_cluster(
        ["a"],
        step_time_s=0.002,
        balancer_args=["--url-inputs-allow", "127.0.0.1", "--outputs-sweep-interval-s", "0.2"],
    )
    await cluster.node("a").control.hang_next(1)  # the first task holds the node
    params = {"prompt": "x", "steps": 2, "image": f"{server}/in.png"}
    accepted = [
        await cluster.api.post("/api/v1/generate", json={"workflow": "img2img-sdxl", "params": p})
        for p in (params, params, params | {"image": base64.b64encode(png("blue")).decode()})
    ]
    task_ids = [answer.json()["id"] for answer in accepted]
    await cluster.node("a").control.wait_hung()
    photo = hashlib.sha256(png("blue")).hexdigest()
    blobs = outputs_dir_for(process_log_dir) / "blobs"

    references = [await redis.hgetall(RedisKeys().task_inputs(t)) for t in task_ids[1:]]
    stored_while_waiting = sorted(path.name for path in blobs.rglob("*") if path.is_file())
    await cluster.node("a").control.release()
    done = [await wait_until_finished(cluster.api, task_id) for task_id in task_ids]

    assert [answer.status_code for answer in accepted] == [202, 202, 202]
    assert [list(files.values()) for files in references] == [[f"sha256:{photo}"]] * 2
    assert stored_while_waiting == [photo]
    assert [task["status"] for task in done] == ["succeeded"] * 3
    outputs = {output["sha256"] for task in done for output in task["outputs"]}

    async def only_outputs_left() -> bool:
        return {path.name for path in blobs.rglob("*") if path.is_file()} == outputs

    await wait_for_condition(only_outputs_left, timeout_s=10, what="the input file deleted")
