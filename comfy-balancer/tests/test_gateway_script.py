"""A script written for one ComfyUI runs unchanged against the balancer's ComfyUI gateway, with
the same results as against a ComfyUI of its own (an emulator)."""

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from comfy_testkit import graphs
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import RunningComponent, basic_auth

BASIC = basic_auth()
"""HTTP Basic with the key as the password: what a ComfyUI script behind auth sends (a ComfyUI
of its own ignores it)."""


def comfyui_script(base_url: str, graph: dict[str, Any], headers: dict[str, str]) -> Any:
    """A typical ComfyUI client, as people write them: urllib (which labels a JSON body
    ``application/x-www-form-urlencoded``), POST /prompt, poll GET /history/{id} until it
    is there, GET /view for each image. Returns what it saw."""

    def call(path: str, data: bytes | None = None) -> bytes:
        request = urllib.request.Request(base_url + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body

    body = json.dumps({"prompt": graph, "client_id": "script-1"}).encode()
    queued = json.loads(call("/prompt", body))
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + 30
    while not (history := json.loads(call(f"/history/{prompt_id}"))):
        assert time.monotonic() < deadline, "the prompt never reached history"
        time.sleep(0.1)
    entry = history[prompt_id]
    images = []
    for node_output in entry["outputs"].values():
        for image in node_output.get("images", []):
            query = urllib.parse.urlencode(
                {
                    "filename": image["filename"],
                    "subfolder": image["subfolder"],
                    "type": image["type"],
                }
            )
            images.append(call(f"/view?{query}"))
    return queued, entry, images


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"])


async def run_script(target: str, graph: dict[str, Any]) -> Any:
    return await asyncio.to_thread(comfyui_script, target, graph, BASIC)


async def test_a_one_comfyui_script_runs_unchanged_against_the_gateway(
    cluster: Cluster, start_emulator: Callable[..., RunningComponent]
) -> None:
    alone = start_emulator("emulator-alone")
    graph = graphs.solid_image(fresh("script"))
    await cluster.nodes_ready(1)

    on_gateway = await run_script(cluster.balancer.url, graph)
    on_comfyui = await run_script(alone.url, graph)

    (queued, entry, images), (queued_alone, entry_alone, images_alone) = on_gateway, on_comfyui
    assert set(queued) == set(queued_alone) == {"prompt_id", "number", "node_errors"}
    assert uuid.UUID(queued["prompt_id"]).version == 4
    assert isinstance(queued["number"], int)
    assert queued["node_errors"] == {}
    assert set(entry) == set(entry_alone) == {"prompt", "outputs", "status", "meta"}
    assert entry["prompt"][1:3] == [queued["prompt_id"], graph]
    assert entry["prompt"][3]["client_id"] == "script-1"
    assert entry["prompt"][4] == entry_alone["prompt"][4] == ["3"]
    assert entry["status"]["status_str"] == entry_alone["status"]["status_str"] == "success"
    assert [m[0] for m in entry["status"]["messages"]] == [
        m[0] for m in entry_alone["status"]["messages"]
    ]
    assert entry["meta"].keys() == entry_alone["meta"].keys() == {"3"}
    [image], [image_alone] = entry["outputs"]["3"]["images"], entry_alone["outputs"]["3"]["images"]
    assert image["filename"] == image_alone["filename"]
    assert image["subfolder"] == queued["prompt_id"]  # the gateway names the prompt
    assert [hashlib.sha256(i).hexdigest() for i in images] == [
        hashlib.sha256(i).hexdigest() for i in images_alone
    ]
    assert images[0].startswith(b"\x89PNG")
