"""ComfyUI clients as people use them, unchanged, against the balancer's gateway: ComfyUI's own
WebSocket example (``websocket-client``: POST /prompt, listen on /ws until ``executing`` with
node null, GET /history, GET /view) and a client library from PyPI (``comfy-api-simplified``:
uploads, queue, history, images, object_info). Each runs in a thread, as its synchronous code
expects; the only thing a user changes is where the key goes."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import websocket
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from PIL import Image

from comfy_testkit import graphs
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import ADMIN_KEY, basic_auth

BASIC_USER = "student"


def websocket_example(base_url: str, graph: dict[str, Any]) -> tuple[list[str], list[bytes]]:
    """ComfyUI's ``websockets_api_example.py``, with the key as a Basic password for HTTP and
    as ``?token=`` for the socket. Returns the message types seen for the prompt and the
    images of its history."""
    host = base_url.removeprefix("http://")
    headers = basic_auth(user=BASIC_USER)
    client_id = str(uuid.uuid4())

    def call(path: str, data: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"http://{host}{path}", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body

    ws = websocket.WebSocket()
    url = f"ws://{host}/ws?clientId={client_id}&token={ADMIN_KEY}"
    ws.connect(url, timeout=30)  # type: ignore[no-untyped-call]  # websocket-client: untyped
    try:
        body = json.dumps({"prompt": graph, "client_id": client_id}).encode()
        prompt_id = json.loads(call("/prompt", body))["prompt_id"]
        seen = []
        while True:
            out = ws.recv()
            if not isinstance(out, str):
                continue  # previews
            message = json.loads(out)
            data = message["data"]
            if data.get("prompt_id") == prompt_id:
                seen.append(message["type"])
                if message["type"] == "executing" and data["node"] is None:
                    break
    finally:
        ws.close()
    history = json.loads(call(f"/history/{prompt_id}"))[prompt_id]
    images = []
    for output in history["outputs"].values():
        for image in output.get("images", []):
            query = urllib.parse.urlencode(
                {"filename": image["filename"], "subfolder": image["subfolder"], "type": "output"}
            )
            images.append(call(f"/view?{query}"))
    return seen, images


async def test_comfyuis_websocket_example_runs_unchanged(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a", "b"])
    await cluster.nodes_ready(2)

    seen, images = await asyncio.to_thread(
        websocket_example, cluster.balancer.url, graphs.solid_image(_fresh(), color=0x102030)
    )

    assert seen[0] == "execution_start"
    assert seen[-2:] == ["execution_success", "executing"]
    assert "executed" in seen
    [image] = images
    with Image.open(io.BytesIO(image)) as png:
        assert png.size == (64, 64)
        assert png.convert("RGB").getpixel((0, 0)) == (0xFF - 0x10, 0xFF - 0x20, 0xFF - 0x30)


def library_session(base_url: str, upload: Path) -> dict[str, Any]:
    """A user of comfy-api-simplified: upload an image, run a workflow that loads it and
    saves it inverted, wait for its images; look at the server meanwhile."""
    api = ComfyApiWrapper(base_url, user=BASIC_USER, password=ADMIN_KEY)
    uploaded = api.upload_image(upload)
    workflow = ComfyWorkflowWrapper(_load_invert_save(uploaded))
    workflow.set_node_param("Save Image", "filename_prefix", _fresh())
    return {
        "uploaded": uploaded,
        "images": api.queue_and_wait_images(workflow, "Save Image"),
        "classes": api.get_object_info(),
        "save_image": api.get_object_info("SaveImage"),
        "queue": api.get_queue(),
        "system": api.get_system_stats(),
    }


async def test_a_client_library_from_pypi_runs_unchanged(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(["a", "b"])
    upload = tmp_path / "photo.png"
    Image.new("RGB", (24, 16), (10, 200, 30)).save(upload)
    await cluster.nodes_ready(2)

    session = await asyncio.to_thread(library_session, cluster.balancer.url, upload)

    assert session["uploaded"] == {
        "name": "photo.png",
        "subfolder": "default_upload_folder",
        "type": "input",
    }
    [(name, image)] = session["images"].items()
    assert name.endswith(".png")
    with Image.open(io.BytesIO(image)) as png:
        assert png.size == (24, 16)
        assert png.convert("RGB").getpixel((5, 5)) == (245, 55, 225)
    async with httpx.AsyncClient(base_url=cluster.nodes[0].emulator.url) as comfyui:
        own = (await comfyui.get("/object_info")).json()
    assert session["classes"] == own  # two nodes of one install: the fleet's is each one's
    assert session["save_image"]["SaveImage"]["output_node"] is True
    assert session["queue"] == {"queue_running": [], "queue_pending": []}
    assert "system" in session["system"]


def _load_invert_save(uploaded: dict[str, str]) -> dict[str, Any]:
    image = f"{uploaded['subfolder']}/{uploaded['name']}"
    return {
        "1": {
            "class_type": "LoadImage",
            "inputs": {"image": image},
            "_meta": {"title": "Load Image"},
        },
        "2": {
            "class_type": "ImageInvert",
            "inputs": {"image": ["1", 0]},
            "_meta": {"title": "Invert Image"},
        },
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "x"},
            "_meta": {"title": "Save Image"},
        },
    }


def _fresh() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"
