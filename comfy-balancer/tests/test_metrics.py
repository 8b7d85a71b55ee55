"""GET /metrics on real balancers, services and emulators over one real Redis."""

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_for_status, wait_until_finished
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.fake_nvml import FAKE_NVML_ENV, install_shim
from comfy_testkit.gateway_ws import ComfyWsClient
from comfy_testkit.metrics import Samples, scrape, value
from comfy_testkit.plugin import BalancerFactory, EmulatorFactory, ServiceFactory
from comfy_testkit.sse_client import RawSseStream
from comfy_testkit.stack import AUTH_HEADERS
from comfy_testkit.waiting import wait_for_condition


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_the_queue_depth_counts_waiting_tasks_and_no_label_names_a_task(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(node_ids=())  # no node: the tasks wait
    prompt_text = fresh("a-secret-prompt")
    graph = graphs.txt2img(prompt_text)
    ids = [(await submit(cluster.api, graph, band="batch"))["id"] for _ in range(2)]
    ids.append((await submit(cluster.api, graph))["id"])
    ids.append((await submit(cluster.api, graph))["id"])
    assert (await cluster.api.delete(f"/api/v1/tasks/{ids[-1]}")).status_code == 200

    text, samples = await scrape(cluster.api)

    assert value(samples, "comfy_queue_depth", priority="batch") == 2
    assert value(samples, "comfy_queue_depth", priority="standard") == 1
    cancelled = value(samples, "comfy_tasks_finished_total", tenant="admin", workflow="graph",
                      status="cancelled")  # fmt: skip
    assert cancelled == 1  # the balancer took it out of the queue: it counts it
    assert value(samples, "comfy_queue_depth", priority="interactive") == 0
    for band in ("batch", "standard"):
        assert (value(samples, "comfy_queue_oldest_age_seconds", priority=band) or 0) > 0
    assert value(samples, "comfy_queue_oldest_age_seconds", priority="interactive") == 0
    assert value(samples, "comfy_nodes", state="dead") == 0
    assert value(samples, "comfy_tasks_submitted_total", tenant="admin", workflow="graph",
                 priority="batch") == 2  # fmt: skip
    assert prompt_text not in text
    assert not [task_id for task_id in ids if task_id in text]


async def test_node_gauges_for_each_node_and_counters_after_a_task(cluster: Cluster) -> None:
    await cluster.nodes_ready(2)
    task = await submit(cluster.api, graphs.txt2img(fresh("m")))
    finished = await wait_until_finished(cluster.api, task["id"])

    async def slots_released() -> Samples | None:
        _, samples = await scrape(cluster.api)
        in_flight = [value(samples, "comfy_node_tasks_in_flight", node=n) for n in ("a", "b")]
        return samples if in_flight == [0, 0] else None

    samples = await wait_for_condition(slots_released, what="the task's slot released")
    for node in ("a", "b"):
        assert value(samples, "comfy_node_up", node=node) == 1
        assert value(samples, "comfy_node_slots", node=node) == 2  # --slots-per-node default
    assert value(samples, "comfy_nodes", state="ready") == 2
    submitted = value(samples, "comfy_tasks_submitted_total", tenant="admin", workflow="graph",
                      priority="standard")  # fmt: skip
    assert submitted == 1
    # The service ended the task that ran on it: it counts it, the balancer does not.
    assert not [name for name, _ in samples if name.startswith("comfy_tasks_finished")]
    ran_on = cluster.node(finished["node_id"]).service
    async with httpx.AsyncClient(base_url=ran_on.url, headers=ran_on.auth_headers) as service:
        _, on_node = await scrape(service)
    succeeded = value(on_node, "comfy_tasks_finished_total", tenant="admin", workflow="graph",
                      status="succeeded")  # fmt: skip
    assert succeeded == 1
    assert value(on_node, "comfy_task_run_seconds_count", workflow="graph",
                 node=finished["node_id"]) == 1  # fmt: skip
    assert value(on_node, "comfy_task_queue_wait_seconds_count", workflow="graph",
                 priority="standard") == 1  # fmt: skip


async def test_a_refused_submit_is_counted_by_reason(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(node_ids=(), balancer_args=["--max-queue", "1"])
    await submit(cluster.api, graphs.txt2img(fresh("q")))
    refused = await cluster.api.post(
        "/api/v1/generate", json={"prompt": graphs.txt2img(fresh("q"))}
    )
    assert refused.status_code == 429

    _, samples = await scrape(cluster.api)

    assert value(samples, "comfy_admission_rejected_total", reason="queue_full") == 1
    assert value(samples, "comfy_admission_rejected_total", reason="rate_limit") == 0


async def test_a_repeated_submit_is_counted_as_an_idempotent_hit(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(node_ids=())  # no node: the tasks wait
    body = {"prompt": graphs.txt2img(fresh("i"))}
    headers = {"Idempotency-Key": fresh("order")}
    chosen = {**body, "task_id": fresh("chosen")}
    for _ in range(2):
        assert (await cluster.api.post("/api/v1/generate", json=body, headers=headers)).is_success
        assert (await cluster.api.post("/api/v1/generate", json=chosen)).is_success

    _, samples = await scrape(cluster.api)

    assert value(samples, "comfy_idempotent_hits_total") == 2
    assert value(samples, "comfy_tasks_submitted_total", tenant="admin", workflow="graph",
                 priority="standard") == 2  # fmt: skip


async def test_a_killed_node_s_task_is_counted_as_taken_back_and_retried(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(balancer_args=["--strategy", "round-robin"])
    await cluster.nodes_ready(2)
    task = await submit(cluster.api, graphs.txt2img(fresh("k"), steps=400))
    running = await wait_for_status(cluster.api, task["id"], {"running"})
    victim = cluster.node(running["node_id"])

    victim.kill()
    await wait_until_finished(cluster.api, task["id"], timeout_s=30)

    _, samples = await scrape(cluster.api)
    assert value(samples, "comfy_lease_expired_total", node=victim.node_id) == 1
    assert value(samples, "comfy_task_retries_total", reason="node_lost") == 1
    assert value(samples, "comfy_task_retries_total", reason="retry_on") == 0


async def test_an_out_of_memory_error_retried_is_counted_by_the_node_that_failed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    await cluster.nodes_ready(2)
    for node in cluster.nodes:
        await node.control.fail_next(1)
    task = await submit(cluster.api, graphs.txt2img(fresh("o"), steps=5))
    await wait_until_finished(cluster.api, task["id"])

    retried = 0.0
    for node in cluster.nodes:
        async with httpx.AsyncClient(
            base_url=node.service.url, headers=node.service.auth_headers
        ) as service:
            _, on_node = await scrape(service)
        retried += value(on_node, "comfy_task_retries_total", reason="retry_on") or 0
    assert retried == 2  # both nodes failed it once; the third attempt succeeded
    _, samples = await scrape(cluster.api)
    assert value(samples, "comfy_task_retries_total", reason="node_lost") == 0


async def test_each_placement_is_counted_by_what_its_node_held_of_its_models(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(node_ids=("a",))
    await cluster.nodes_ready(1)
    sd15, sdxl = "v1-5-pruned-emaonly-fp16.safetensors", graphs.SDXL_CHECKPOINT

    async def run(checkpoint: str) -> None:
        graph = graphs.txt2img(fresh("m"), steps=2, checkpoint=checkpoint)
        await wait_until_finished(cluster.api, (await submit(cluster.api, graph))["id"])

        async def resident() -> bool:
            [node] = (await cluster.api.get("/api/v1/nodes")).json()
            return bool(node["health"]) and checkpoint in node["health"]["profile"]["resident"]

        await wait_for_condition(resident, what=f"{checkpoint} resident on the node")

    await run(sd15)  # nothing loaded: cold
    await run(sd15)  # hit
    await run(sdxl)  # sd15 loaded: switch

    _, samples = await scrape(cluster.api)
    for kind in ("cold", "hit", "switch"):
        assert value(samples, "comfy_dispatch_total", node="a", affinity=kind) == 1, kind


async def test_only_one_of_two_replicas_exports_the_fleet_gauges(
    cluster: Cluster, start_balancer: BalancerFactory
) -> None:
    other = start_balancer(name="balancer-2")
    async with httpx.AsyncClient(base_url=other.url, headers=AUTH_HEADERS, timeout=15) as api2:
        _, first = await scrape(cluster.api)
        _, second = await scrape(api2)
        _, first_again = await scrape(cluster.api)

    def exports_fleet(samples: Samples) -> bool:
        return any(name == "comfy_queue_depth" for name, _ in samples)

    assert exports_fleet(first)
    assert exports_fleet(first_again)
    assert not exports_fleet(second)
    assert any(name == "comfy_admission_rejected_total" for name, _ in second)


async def test_metrics_need_an_admin_key(cluster: Cluster) -> None:
    async with KeyClients(cluster) as keys:
        reader = await keys.make(fresh("reader"), scopes=["read", "submit"])
        assert (await reader.get("/metrics")).status_code == 403
    async with httpx.AsyncClient(base_url=cluster.balancer.url) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    assert "/metrics" not in (await cluster.api.get("/openapi.json")).json()["paths"]


async def test_gpu_power_and_xid_errors_from_a_service_with_a_fake_nvml(
    start_emulator: EmulatorFactory,
    start_service: ServiceFactory,
    start_balancer: BalancerFactory,
    tmp_path: Path,
) -> None:
    gpu = {"uuid": "GPU-0e3c", "power_mw": 68_250, "power_limit_mw": 72_000,
           "pending_xids": [48, 79]}  # fmt: skip
    env = {"PYTHONPATH": str(install_shim(tmp_path / "nvml")), FAKE_NVML_ENV: json.dumps([gpu])}
    start_service(start_emulator().url, node_id="gpu-node", env=env)
    balancer = start_balancer()
    labels = {"node": "gpu-node", "gpu_index": "0", "gpu_uuid": "GPU-0e3c"}

    async with httpx.AsyncClient(base_url=balancer.url, headers=AUTH_HEADERS) as api:

        async def gpu_seen() -> Samples | None:
            _, samples = await scrape(api)
            return samples if value(samples, "comfy_node_gpu_power_watts", **labels) else None

        samples = await wait_for_condition(gpu_seen, what="the GPU in the balancer's scrape")

    assert value(samples, "comfy_node_gpu_power_watts", **labels) == 68.25
    assert value(samples, "comfy_node_gpu_power_limit_watts", **labels) == 72
    assert value(samples, "comfy_node_gpu_xid_errors_total", **labels) == 2
    assert value(samples, "comfy_node_gpu_last_xid", **labels) == 79
    assert value(samples, "comfy_node_gpu_info", **labels, gpu_model="NVIDIA L4") == 1


async def test_open_event_streams_are_counted_by_kind(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(node_ids=())  # no node: the task waits, its stream stays open
    task = await submit(cluster.api, graphs.txt2img(fresh("s")))
    url = cluster.balancer.url

    async def clients(sse: int, ws: int) -> bool:
        _, samples = await scrape(cluster.api)
        return [value(samples, "comfy_stream_clients", kind=k) for k in ("sse", "ws")] == [sse, ws]

    assert await clients(0, 0)
    sse = await RawSseStream.open(url, f"/api/v1/tasks/{task['id']}/events")
    assert sse.status == 200
    ws = await ComfyWsClient.open(url, headers=AUTH_HEADERS)
    await wait_for_condition(lambda: clients(1, 1), what="one stream of each kind counted")
    await sse.close()
    await ws.close()
    await wait_for_condition(lambda: clients(0, 0), what="closed streams no longer counted")
