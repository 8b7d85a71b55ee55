"""Model-aware placement with real processes: emulators that pay for loading checkpoints,
services that learn it, a balancer that avoids it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster, Node
from comfy_testkit.waiting import wait_for_condition

SDXL, SD15 = graphs.SDXL_CHECKPOINT, "v1-5-pruned-emaonly-fp16.safetensors"
# A switch of 1.5 s against 0.2 s runs (20 steps of 10 ms): a wrong placement shows.
LOAD_COSTS = [
    "--load-scale",
    "1",
    "--model-cost",
    f"{SDXL}=1.5:6900",
    "--model-cost",
    f"{SD15}=1.5:2000",
]


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def run_directly(node: Node, graph: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=node.service.url, headers=node.service.auth_headers, timeout=10
    ) as service:
        task = await submit(service, graph)
        return await wait_until_finished(service, task["id"])


async def emulator_stats(node: Node) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        stats: dict[str, Any] = (await http.get(f"{node.emulator.url}/emulator/stats")).json()
        return stats


async def profiles(cluster: Cluster) -> dict[str, dict[str, Any]]:
    nodes = (await cluster.api.get("/api/v1/nodes")).json()
    return {node["node_id"]: node["health"]["profile"] for node in nodes if node["health"]}


async def test_each_model_goes_to_the_node_that_has_it_loaded(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(emulator_args={"a": LOAD_COSTS, "b": LOAD_COSTS})
    await cluster.nodes_ready(2)
    a, b = cluster.nodes
    await run_directly(a, graphs.txt2img(f"w-{fresh()}", steps=20, checkpoint=SD15))
    await run_directly(b, graphs.txt2img(f"w-{fresh()}", steps=20, checkpoint=SDXL))

    async def residency_published() -> bool:
        seen = await profiles(cluster)
        return seen.get("a", {}).get("resident") == [SD15] and seen.get("b", {}).get(
            "resident"
        ) == [SDXL]

    await wait_for_condition(residency_published, what="each node's loaded checkpoint")
    loads_before = [(await emulator_stats(node))["model_loads"] for node in cluster.nodes]

    # Interleaved, all at once. Blind to models, a tie goes to the first node ("a"): the SDXL
    # tasks would go there and each node would load the other's model.
    checkpoints = [SDXL, SD15, SDXL, SD15, SDXL, SD15]
    ids = [
        (await submit(cluster.api, graphs.txt2img(f"m-{fresh()}", steps=20, seed=i, checkpoint=c)))[
            "id"
        ]
        for i, c in enumerate(checkpoints)
    ]
    tasks = await asyncio.gather(*(wait_until_finished(cluster.api, i) for i in ids))

    assert {t["status"] for t in tasks} == {"succeeded"}
    assert [t["node_id"] for t in tasks] == ["b", "a", "b", "a", "b", "a"]
    loads_after = [(await emulator_stats(node))["model_loads"] for node in cluster.nodes]
    assert loads_after == loads_before


async def test_an_idle_node_that_ran_a_long_model_free_graph_still_gets_work(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Found against a real ComfyUI: a model-free graph that ran 18 s was taken for 18 s of
    per-task overhead, and two tasks then queued behind the other node while this one sat
    idle. Here it runs 1.5 s; then two sampler tasks arrive at once: one per node."""
    slow_image = ["--node-time", "EmptyImage=1.5"]
    cluster = make_cluster(emulator_args={"a": slow_image, "b": slow_image}, step_time_s=0.02)
    await cluster.nodes_ready(2)
    a, b = cluster.nodes
    for node in (a, b):  # each loads the checkpoint, then measures its speed on a hot run
        for seed in (1, 2):
            await run_directly(node, graphs.txt2img(f"w-{fresh()}", steps=10, seed=seed))
    await run_directly(a, graphs.solid_image(f"long-{fresh()}"))

    async def learned() -> bool:
        nodes = (await cluster.api.get("/api/v1/nodes")).json()
        health = {node["node_id"]: node["health"] for node in nodes}
        shapes = health["a"] and health["a"]["profile"]["shape_run_s"]
        return bool(shapes) and any(seconds > 1.2 for seconds in shapes.values())

    await wait_for_condition(learned, what="node a's run time of the model-free graph")
    speed = (await cluster.api.get("/api/v1/nodes")).json()
    overhead = {node["node_id"]: node["health"]["speed"]["overhead_s"] for node in speed}
    assert overhead["a"] < 0.5, overhead

    ids = [
        (await submit(cluster.api, graphs.txt2img(f"t-{fresh()}", steps=20, seed=i)))["id"]
        for i in range(2)
    ]
    tasks = await asyncio.gather(*(wait_until_finished(cluster.api, i) for i in ids))
    assert sorted(t["node_id"] for t in tasks) == ["a", "b"]
