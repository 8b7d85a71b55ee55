"""The fleet gauges built from one read of the queue and the nodes: a table, no Redis."""

import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest

from comfy_balancer.metrics import BalancerMetrics, exposition, fleet_families
from comfy_balancer.registry import NodeState, NodeView
from comfy_shared.models import Band, ComfyStatus, GpuInfo, NodeHealth
from comfy_shared.task_queue import QueueStats
from comfy_testkit.metrics import Samples, samples_of

GPU = GpuInfo(
    index=0,
    name="NVIDIA L4",
    uuid="GPU-5a1e",
    utilization_percent=50,
    memory_used_bytes=3 * 2**30,
    memory_total_bytes=24 * 2**30,
    temperature_c=61,
    power_watts=68.5,
    power_limit_watts=72,
    xid_errors=2,
    last_xid=79,
)


def node(node_id: str, *, reachable: bool = True, gpus: list[GpuInfo] | None = None) -> NodeView:
    health = NodeHealth(
        node_id=node_id,
        url=f"http://{node_id}",
        version="1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        comfyui=ComfyStatus(reachable=reachable),
        cpu_percent=0,
        ram_used_bytes=0,
        ram_total_bytes=1,
        gpus=gpus or [],
    )
    return NodeView(node_id=node_id, health=health, last_seen_ms=0, in_flight=1, slots=2)


def samples(text: bytes) -> Samples:
    return samples_of(text.decode())


def test_gpu_gauges_carry_node_index_and_uuid() -> None:
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    stats = QueueStats(pending=3, by_band={Band.BATCH: 3}, aged=0, oldest_queued_ms=hour_ago_ms,
                       queued_gpu_s=0, oldest_by_band={Band.BATCH: hour_ago_ms})  # fmt: skip
    nodes = [node("a", gpus=[GPU]), node("b", reachable=False)]

    got = samples(exposition(BalancerMetrics(), fleet_families(stats, nodes, dead_letters=4)))

    gpu = {("node", "a"), ("gpu_index", "0"), ("gpu_uuid", "GPU-5a1e")}
    assert got["comfy_node_gpu_info", frozenset(gpu | {("gpu_model", "NVIDIA L4")})] == 1
    assert got["comfy_node_vram_used_bytes", frozenset(gpu)] == 3 * 2**30
    assert got["comfy_node_vram_total_bytes", frozenset(gpu)] == 24 * 2**30
    assert got["comfy_webhook_dead_letters", frozenset()] == 4
    assert got["comfy_node_gpu_temperature_celsius", frozenset(gpu)] == 61
    assert got["comfy_node_gpu_utilization_ratio", frozenset(gpu)] == 0.5
    assert got["comfy_node_gpu_power_watts", frozenset(gpu)] == 68.5
    assert got["comfy_node_gpu_power_limit_watts", frozenset(gpu)] == 72
    assert got["comfy_node_gpu_xid_errors_total", frozenset(gpu)] == 2
    assert got["comfy_node_gpu_last_xid", frozenset(gpu)] == 79
    assert got["comfy_queue_depth", frozenset({("priority", "batch")})] == 3
    oldest = {band: got["comfy_queue_oldest_age_seconds", frozenset({("priority", band.value)})]
              for band in Band}  # fmt: skip
    assert oldest[Band.INTERACTIVE] == 0  # nothing waits there
    assert 3599 < oldest[Band.BATCH] < 3700
    assert got["comfy_node_up", frozenset({("node", "b")})] == 0
    states = {state.value: got["comfy_nodes", frozenset({("state", state.value)})]
              for state in NodeState}  # fmt: skip
    assert states[NodeState.READY] == 1
    assert states[NodeState.COMFYUI_DOWN] == 1
    assert sum(states.values()) == 2


def test_without_the_lease_only_the_process_metrics_are_exported() -> None:
    text = exposition(BalancerMetrics()).decode()

    assert "comfy_admission_rejected_total" in text
    assert "comfy_queue_depth" not in text
    assert generate_latest(CollectorRegistry()) == b""


def test_a_reading_nvml_did_not_give_is_left_out_not_zero() -> None:
    bare = GpuInfo(index=1, name="NVIDIA T4", uuid="GPU-7b2f")
    stats = QueueStats(pending=0, by_band={}, aged=0, oldest_queued_ms=None, queued_gpu_s=0)

    got = samples(exposition(BalancerMetrics(), fleet_families(stats, [node("a", gpus=[bare])])))

    assert not [name for name, labels in got if ("gpu_uuid", "GPU-7b2f") in labels
                and name != "comfy_node_gpu_info"]  # fmt: skip
