"""README "Metrics" lists every metric the balancer and the services export, with its labels:
the table is checked against what a scrape of each process holds, every family filled."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from comfy_balancer.budgets import BudgetUse
from comfy_balancer.metrics import BalancerMetrics, exposition, fleet_families, redis_up_family
from comfy_balancer.registry import NodeView
from comfy_balancer.scheduling import Affinity
from comfy_service.metrics import ServiceMetrics
from comfy_shared.models import Band, ComfyStatus, GpuInfo, NodeHealth, NodeProfile
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_clients import StreamClients
from comfy_shared.task_queue import QueueStats
from comfy_shared.task_store import TaskStore
from comfy_testkit.records import on_node, run, succeed

README = Path(__file__).parents[1] / "README.md"
GPU = GpuInfo(index=0, name="NVIDIA L4", uuid="GPU-1", utilization_percent=1,
              memory_used_bytes=1, memory_total_bytes=2, temperature_c=40, power_watts=70,
              power_limit_watts=72, xid_errors=1, last_xid=79)  # fmt: skip
HEALTH = NodeHealth(node_id="n", url="http://n", version="1",
                    started_at=datetime(2026, 1, 1, tzinfo=UTC),
                    comfyui=ComfyStatus(reachable=True, queue_running=0, queue_pending=0),
                    cpu_percent=0, ram_used_bytes=0, ram_total_bytes=1, gpus=[GPU],
                    profile=NodeProfile(resident=["sd_xl_base_1.0.safetensors"]))  # fmt: skip


def documented() -> dict[str, str]:
    """Metric name -> the labels cell of its row in README's table of metrics (label names in
    backticks, e.g. `` `node, gpu_index` ``)."""
    text = README.read_text()
    table = text[text.index("| Metric | Type | Labels | Exported by |") :].split("\n\n")[0]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        names, _kind, labels, _by = line.strip("|").split(" | ")
        for name in re.findall(r"`(comfy_\w+)`", names):
            rows[name] = labels
    return rows


def families(text: bytes) -> dict[str, set[str]]:
    """Name (as documented: ``_total`` on counters) -> the label names of its samples."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text.decode()):
        if family.name.endswith("_created"):
            continue  # prometheus-client's creation time of each counter and histogram
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert family.samples, name  # every family is filled here, so its labels are known
        labels = found.setdefault(name, set())
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
    return found


async def balancer_text(redis: Redis, keys: RedisKeys) -> bytes:
    metrics = BalancerMetrics()
    metrics.count_submitted(tenant="t", workflow=None, band=Band.STANDARD)
    metrics.count_lease_expired("n")
    metrics.count_dispatched("n", Affinity.HIT)
    await end_a_task(TaskStore(redis, keys, on_end=metrics.outcomes.observe_end))
    queued_ms = int(time.time() * 1000)
    stats = QueueStats(pending=1, by_band={Band.BATCH: 1}, aged=0, oldest_queued_ms=queued_ms,
                       queued_gpu_s=1, oldest_by_band={Band.BATCH: queued_ms})  # fmt: skip
    node = NodeView(node_id="n", health=HEALTH, last_seen_ms=0, in_flight=0, slots=1)
    budget = BudgetUse("k1", "t", "month", budget_gpu_s=10, used_gpu_s=1)
    fleet = fleet_families(stats, [node], dead_letters=1, budgets=[budget])
    return exposition(metrics, [*fleet, redis_up_family(reached=True)], streams=StreamClients())


async def service_text(redis: Redis, keys: RedisKeys) -> bytes:
    await redis.set(keys.node_health("n"), HEALTH.model_dump_json())
    metrics = ServiceMetrics(redis, keys, "n")
    await end_a_task(TaskStore(redis, keys, on_end=metrics.outcomes.observe_end))
    metrics.freed_memory()
    metrics.observe_model_switch("sd_xl_base_1.0.safetensors", 4.2)
    return await metrics.exposition(StreamClients())


async def end_a_task(store: TaskStore) -> None:
    """A task placed, run and ended through ``store`` (its outcome metrics then have samples)."""
    task_id = uuid.uuid4().hex
    await store.create(on_node(task_id), {"1": {"class_type": "X"}})
    await run(store, task_id)
    await succeed(store, task_id)


async def test_the_readme_lists_every_exported_metric_with_its_labels(redis: Redis) -> None:
    keys = RedisKeys(f"docs-{uuid.uuid4().hex[:8]}")
    exported = families(await balancer_text(redis, keys))
    for name, labels in families(await service_text(redis, keys)).items():
        exported[name] = exported.get(name, set()) | labels
    rows = documented()

    assert set(exported) == set(rows)
    for name, labels in exported.items():
        named = {word for span in re.findall(r"`([^`]*)`", rows[name])
                 for word in re.findall(r"\w+", span)}  # fmt: skip
        assert labels <= named, (name, labels - named)
