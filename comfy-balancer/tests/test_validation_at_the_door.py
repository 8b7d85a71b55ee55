"""The balancer validates a graph against its fleet's object_info when it is submitted, as
ComfyUI would: a graph every node would refuse is answered 422 at once, with ComfyUI's own
error, exactly as a node answers it, and nothing is queued. Real emulators, services,
balancers and Redis, each a process."""

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.stack import AUTH_HEADERS

ONLY_ON_A = "only-on-a.safetensors"
ONLY_ON_B = "only-on-b.safetensors"
SHARED = "on-both.safetensors"


def fresh() -> str:
    return uuid.uuid4().hex[:8]


def two_models(prefix: str) -> dict[str, Any]:
    """Two default graphs side by side, one on each node's own checkpoint."""
    first = graphs.txt2img(f"{prefix}-a", checkpoint=ONLY_ON_A)
    second = graphs.txt2img(f"{prefix}-b", checkpoint=ONLY_ON_B)
    return first | {f"b{node_id}": node for node_id, node in _renumbered(second, "b").items()}


def _renumbered(graph: dict[str, Any], prefix: str) -> dict[str, Any]:
    def relink(value: Any) -> Any:
        return [f"{prefix}{value[0]}", value[1]] if isinstance(value, list) else value

    return {
        node_id: {**node, "inputs": {k: relink(v) for k, v in node["inputs"].items()}}
        for node_id, node in graph.items()
    }


def cluster_with_own_models(make_cluster: Callable[..., Cluster], **kwargs: Any) -> Cluster:
    # --model replaces the emulator's list of checkpoints
    models = {
        name: ["--model", own, "--model", SHARED]
        for name, own in (("a", ONLY_ON_A), ("b", ONLY_ON_B))
    }
    return make_cluster(emulator_args=models, **kwargs)


async def nothing_queued(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/v1/queue")).json()["pending"] == 0
    assert (await api.get("/api/v1/tasks")).json()["tasks"] == []


async def test_a_graph_comfyui_refuses_is_answered_422_as_a_node_answers_it(
    cluster: Cluster,
) -> None:
    await cluster.nodes_ready(2)
    graph = graphs.solid_image(f"bad-{fresh()}")
    graph["1"]["inputs"]["width"] = 0
    del graph["3"]["inputs"]["filename_prefix"]

    refused = await cluster.api.post("/api/v1/generate", json={"prompt": graph})
    await nothing_queued(cluster.api)

    node = cluster.nodes[0]  # the same graph sent to a node, and to its ComfyUI
    async with httpx.AsyncClient(base_url=node.service.url, headers=node.service.auth_headers) as s:
        by_a_node = await s.post("/api/v1/generate", json={"prompt": graph})
    async with httpx.AsyncClient(base_url=node.emulator.url) as comfyui:
        by_comfyui = await comfyui.post("/prompt", json={"prompt": graph})
    assert (refused.status_code, by_a_node.status_code, by_comfyui.status_code) == (422, 422, 400)
    assert refused.json() == by_a_node.json()
    body = refused.json()
    assert (body["code"], body["type"]) == ("prompt_rejected", "validation")
    assert {"error": body["error"], "node_errors": body["node_errors"]} == by_comfyui.json()
    assert sorted(body["node_errors"]) == ["1", "3"]
    assert body["error"]["details"] == "Required input is missing: filename_prefix"


async def test_a_partly_valid_graph_is_accepted_and_runs_its_valid_branch(
    cluster: Cluster,
) -> None:
    await cluster.nodes_ready(2)
    task = await submit(cluster.api, graphs.partly_invalid(f"p-{fresh()}"))
    done = await wait_until_finished(cluster.api, task["id"])
    assert (done["status"], set(done["warnings"])) == ("succeeded", {"4"})

    graph = graphs.partly_invalid(f"p-{fresh()}")  # the gateway answers as ComfyUI does
    on_gateway = await cluster.api.post("/prompt", json={"prompt": graph})
    async with httpx.AsyncClient(base_url=cluster.nodes[0].emulator.url) as comfyui:
        on_comfyui = await comfyui.post("/prompt", json={"prompt": graph})
    assert on_gateway.status_code == on_comfyui.status_code == 200
    assert on_gateway.json()["node_errors"] == on_comfyui.json()["node_errors"]
    assert list(on_gateway.json()["node_errors"]) == ["4"]
    done = await wait_until_finished(cluster.api, on_gateway.json()["prompt_id"])
    assert done["status"] == "succeeded"


async def test_a_model_file_only_one_node_has_runs_there_and_one_nobody_has_is_refused(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = cluster_with_own_models(make_cluster)
    await cluster.nodes_ready(2)

    task = await submit(cluster.api, graphs.txt2img(f"m-{fresh()}", checkpoint=ONLY_ON_B))
    done = await wait_until_finished(cluster.api, task["id"])
    assert (done["status"], done["node_id"]) == ("succeeded", "b")

    nowhere = graphs.txt2img("x", checkpoint="nowhere.safetensors")
    refused = await cluster.api.post("/api/v1/generate", json={"prompt": nowhere})
    assert (refused.status_code, refused.json()["code"]) == (422, "prompt_rejected")
    error = refused.json()["node_errors"]["4"]["errors"][0]
    assert (error["type"], error["extra_info"]["received_value"]) == (
        "value_not_in_list",
        "nowhere.safetensors",
    )

    # Valid for the fleet's union, but no node has both files: no node can run it whole.
    split = await cluster.api.post("/api/v1/generate", json={"prompt": two_models("s")})
    assert (split.status_code, split.json()["code"]) == (422, "no_capable_node")
    assert split.json()["nodes_checked"] == ["a", "b"]
    assert split.json()["missing"]["a"]["models"] == [
        f"CheckpointLoaderSimple.ckpt_name = {ONLY_ON_B}"
    ]


async def test_an_intersection_balancer_refuses_what_not_every_node_offers(
    make_cluster: Callable[..., Cluster], start_balancer: BalancerFactory
) -> None:
    cluster = cluster_with_own_models(make_cluster)
    strict = start_balancer("strict", extra_args=["--object-info-merge", "intersection"])
    await cluster.nodes_ready(2)
    graph = graphs.txt2img(f"i-{fresh()}", checkpoint=ONLY_ON_A)

    async with httpx.AsyncClient(base_url=strict.url, headers=AUTH_HEADERS) as api:
        refused = await api.post("/api/v1/generate", json={"prompt": graph})
        shared = graphs.txt2img(f"c-{fresh()}", checkpoint=SHARED)
        common = await api.post("/api/v1/generate", json={"prompt": shared})
    accepted = await cluster.api.post("/api/v1/generate", json={"prompt": graph})  # union

    assert (refused.status_code, refused.json()["code"]) == (422, "prompt_rejected")
    assert refused.json()["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"
    assert (common.status_code, accepted.status_code) == (202, 202), common.text
    done = await wait_until_finished(cluster.api, accepted.json()["id"])
    assert (done["status"], done["node_id"]) == ("succeeded", "a")


async def test_with_no_live_node_a_task_waits_unvalidated(
    start_balancer: BalancerFactory,
) -> None:
    balancer = start_balancer()
    async with httpx.AsyncClient(base_url=balancer.url, headers=AUTH_HEADERS) as api:
        waiting = await api.post("/api/v1/generate", json={"prompt": graphs.invalid_width("w")})
        assert (waiting.status_code, waiting.json()["status"]) == (202, "queued")
