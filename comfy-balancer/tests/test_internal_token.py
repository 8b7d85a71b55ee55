"""The balancer carries the internal token to its services: with the same token everything
works through it (placing, proxied outputs, cancels forwarded to the node), and a node that
refuses the balancer's token runs nothing the balancer sends."""

import uuid
from collections.abc import Callable
from contextlib import aclosing

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_for_status, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import BalancerFactory, EmulatorFactory, ServiceFactory
from comfy_testkit.stack import AUTH_HEADERS, TEST_INTERNAL_TOKEN
from comfy_testkit.waiting import wait_for_condition


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def node_ready(api: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        nodes = (await api.get("/api/v1/nodes")).json()
        return any(node["state"] == "ready" for node in nodes)

    await wait_for_condition(ready, what="a ready node")


async def test_with_the_token_the_balancer_places_serves_outputs_and_cancels(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"])
    bearer = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}
    assert cluster.node("a").service.auth_headers == bearer
    async with httpx.AsyncClient(base_url=cluster.node("a").service.url) as stranger:
        refused = await stranger.get("/api/v1/workflows")
        assert refused.status_code == 401  # the node is guarded ...
    await node_ready(cluster.api)

    done = await submit(cluster.api, graphs.solid_image(f"d-{fresh()}"))  # ... the balancer gets in
    finished = await wait_until_finished(cluster.api, done["id"])
    assert (finished["status"], finished["node_id"], finished["attempts"]) == ("succeeded", "a", 1)
    output = await cluster.api.get(finished["outputs"][0]["url"])  # proxied from the node
    assert (output.status_code, output.content[:4]) == (200, b"\x89PNG")

    running = await submit(cluster.api, graphs.txt2img(f"r-{fresh()}", steps=3000))  # 30 s
    await wait_for_status(cluster.api, running["id"], {"running"})
    cancelled = await cluster.api.delete(f"/api/v1/tasks/{running['id']}")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    # The node heard the cancel: ComfyUI runs the next task now, not in 30 s.
    after = await submit(cluster.api, graphs.solid_image(f"n-{fresh()}"))
    finished = await wait_until_finished(cluster.api, after["id"], timeout_s=10)
    assert finished["status"] == "succeeded"
    assert TEST_INTERNAL_TOKEN not in cluster.balancer.process.output()


async def test_a_node_that_refuses_the_balancer_s_token_runs_nothing(
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
    start_balancer: BalancerFactory,
) -> None:
    emulator = start_emulator()
    start_service(emulator.url, node_id="a")  # the test token
    balancer = start_balancer(
        internal_token="another-" + "k" * 32, extra_args=["--max-attempts", "1"]
    )
    async with (
        httpx.AsyncClient(base_url=balancer.url, timeout=10, headers=AUTH_HEADERS) as api,
        aclosing(EmulatorControl(emulator.url)) as control,
    ):
        await node_ready(api)
        task = await submit(api, graphs.solid_image(f"x-{fresh()}"))
        failed = await wait_until_finished(api, task["id"])

        assert failed["status"] == "failed"
        assert "internal token" in failed["error"]["message"], failed["error"]
        assert (await control.stats())["total_executions"] == 0
