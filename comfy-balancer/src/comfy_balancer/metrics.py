"""The balancer's Prometheus metrics (README "Metrics").

Two kinds, exported apart so Prometheus' sum over every target stays exact:

- per-process counters, counted where the event happens (a task accepted, a submit refused,
  a task this replica ended: ``comfy_shared.task_metrics``): every replica exports its own;
- fleet gauges (the queue, the nodes and their GPUs), read from Redis at scrape time: every
  replica sees the same figures, so only the replica holding a short Redis lease exports
  them, and the others export none (a lost replica's lease lapses and another takes it).

Labels are bounded: a template name (``graph`` for a raw graph), a tenant, a band, a closed
reason; never a task id, prompt text, seed or file name.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from comfy_balancer.auth.rate_limit import RateLimited
from comfy_balancer.budgets import BudgetExhausted, BudgetUse
from comfy_balancer.errors import (
    BandNotAllowed,
    KeyQueueFull,
    NoCapableNode,
    PriorityNotAllowed,
    QueueFull,
)
from comfy_balancer.registry import NodeState, NodeView
from comfy_balancer.scheduling import Affinity
from comfy_shared.comfyui import PromptRejected
from comfy_shared.models import Band, GpuInfo
from comfy_shared.stream_clients import StreamClients
from comfy_shared.task_metrics import TaskOutcomes, workflow_label
from comfy_shared.task_queue import QueueStats

FLEET_LEASE_MS = 30_000
"""How long a replica keeps exporting the fleet gauges after its last scrape."""

REJECTION_REASONS: dict[type[Exception], str] = {
    QueueFull: "queue_full",
    KeyQueueFull: "key_queue_full",
    RateLimited: "rate_limit",
    BudgetExhausted: "budget",
    NoCapableNode: "capability",
    PromptRejected: "invalid_prompt",
    PriorityNotAllowed: "priority_not_allowed",
    BandNotAllowed: "band_not_allowed",
}
"""``comfy_admission_rejected_total{reason}``: the refusals of a submit that are counted."""


class BalancerMetrics:
    """The process's own metrics, on a registry of its own (several apps may share a process
    in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "comfy_tasks_submitted",
            "Tasks accepted into the queue by this replica.",
            ["tenant", "workflow", "priority"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "comfy_admission_rejected",
            "Submits this replica refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECTION_REASONS.values():
            self.rejected.labels(reason)
        self.idempotent_hits = Counter(
            "comfy_idempotent_hits",
            "Submits this replica answered with an existing task, as their Idempotency-Key "
            "or task id was used already (nothing queued again).",
            registry=self.registry,
        )
        self.dispatched = Counter(
            "comfy_dispatch",
            "Tasks this replica placed on a node, by what the node held of their models: hit "
            "(all resident), switch (other models), cold (none).",
            ["node", "affinity"],
            registry=self.registry,
        )
        self.lease_expired = Counter(
            "comfy_lease_expired",
            "Placements this replica's sweep took back from a node that is gone or whose "
            "ComfyUI stayed down (the task is queued again, or fails out of attempts).",
            ["node"],
            registry=self.registry,
        )
        self.outcomes = TaskOutcomes(self.registry)

    def count_submitted(self, *, tenant: str, workflow: str | None, band: Band) -> None:
        self.submitted.labels(tenant, workflow_label(workflow), band.value).inc()

    def count_dispatched(self, node_id: str, affinity: Affinity) -> None:
        self.dispatched.labels(node_id, affinity.value).inc()

    def count_lease_expired(self, node_id: str) -> None:
        self.lease_expired.labels(node_id).inc()

    def count_idempotent_hit(self) -> None:
        self.idempotent_hits.inc()

    def count_rejected(self, error: Exception) -> None:
        """Counts ``error`` if it is one of the refusals of :data:`REJECTION_REASONS`."""
        reason = next((r for t, r in REJECTION_REASONS.items() if isinstance(error, t)), None)
        if reason is not None:
            self.rejected.labels(reason).inc()


class FleetLease:
    """Which replica exports the fleet gauges: the one whose id the lease key holds."""

    def __init__(self, redis: Redis, key: str, *, ttl_ms: int = FLEET_LEASE_MS) -> None:
        self._redis = redis
        self._key = key
        self._ttl_ms = ttl_ms
        self.replica_id = uuid.uuid4().hex

    async def hold(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; False if another holds it."""
        if await self._redis.set(self._key, self.replica_id, nx=True, px=self._ttl_ms):
            return True
        if await self._redis.get(self._key) != self.replica_id:
            return False
        await self._redis.pexpire(self._key, self._ttl_ms)
        return True

    async def release(self) -> None:
        if await self._redis.get(self._key) == self.replica_id:
            await self._redis.delete(self._key)


class _Families(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(
    metrics: BalancerMetrics, fleet: Sequence[Metric] = (), *, streams: StreamClients | None = None
) -> bytes:
    """The text Prometheus scrapes: the process's metrics (with its event-stream clients),
    then the fleet's (if given)."""
    now = CollectorRegistry(auto_describe=False)
    now.register(_Families([*([streams.family()] if streams is not None else []), *fleet]))
    return generate_latest(metrics.registry) + generate_latest(now)


def redis_up_family(*, reached: bool) -> Metric:
    up = GaugeMetricFamily(
        "comfy_redis_up", "1 if this balancer replica reached Redis while it was scraped."
    )
    up.add_metric([], 1 if reached else 0)
    return up


def fleet_families(
    stats: QueueStats,
    nodes: Sequence[NodeView],
    *,
    dead_letters: int = 0,
    budgets: Sequence[BudgetUse] = (),
) -> list[Metric]:
    """The fleet gauges from one read of the queue, one of the nodes, the count of
    webhooks given up on and the budgets of the API keys that have one."""
    dead = GaugeMetricFamily(
        "comfy_webhook_dead_letters",
        "Webhooks given up on after their last retry, kept for GET /api/v1/webhooks/dead "
        "(at most 1,000).",
        value=dead_letters,
    )
    return [
        *_queue_families(stats), *_node_families(nodes), *_gpu_families(nodes), dead,
        *_budget_families(budgets),
    ]  # fmt: skip


def _budget_families(uses: Sequence[BudgetUse]) -> Iterator[Metric]:
    labels = ["tenant", "key", "period"]  # the key's id, never its secret
    budget = GaugeMetricFamily(
        "comfy_budget_gpu_seconds",
        "The GPU-second budget of an API key per UTC day or month.",
        labels=labels,
    )
    used = GaugeMetricFamily(
        "comfy_budget_used_gpu_seconds",
        "GPU-seconds the key's tasks used this UTC day or month (tasks counted when they end).",
        labels=labels,
    )
    for use in uses:
        budget.add_metric([use.tenant, use.key_id, use.period], use.budget_gpu_s)
        used.add_metric([use.tenant, use.key_id, use.period], use.used_gpu_s)
    yield from (budget, used)


def _queue_families(stats: QueueStats) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "comfy_queue_depth", "Tasks waiting in the queue, by band.", labels=["priority"]
    )
    for band in Band:
        depth.add_metric([band.value], stats.by_band.get(band, 0))
    yield depth
    oldest = GaugeMetricFamily(
        "comfy_queue_oldest_age_seconds",
        "How long the longest-waiting queued task of the band has waited (0 when none waits).",
        labels=["priority"],
    )
    now_s = time.time()
    for band in Band:
        queued_ms = stats.oldest_by_band.get(band)
        oldest.add_metric(
            [band.value], max(0.0, now_s - queued_ms / 1000) if queued_ms is not None else 0.0
        )
    yield oldest


def _node_families(nodes: Sequence[NodeView]) -> Iterator[Metric]:
    counts = GaugeMetricFamily("comfy_nodes", "Known nodes, by state.", labels=["state"])
    for state in NodeState:
        counts.add_metric([state.value], sum(1 for n in nodes if n.state is state))
    yield counts
    up = GaugeMetricFamily(
        "comfy_node_up", "1 if the node runs tasks (its ComfyUI answers).", labels=["node"]
    )
    slots = GaugeMetricFamily("comfy_node_slots", "Task slots of the node.", labels=["node"])
    in_flight = GaugeMetricFamily(
        "comfy_node_tasks_in_flight", "Tasks placed on the node.", labels=["node"]
    )
    for node in nodes:
        up.add_metric([node.node_id], 1 if node.is_live else 0)
        slots.add_metric([node.node_id], node.slots)
        in_flight.add_metric([node.node_id], node.in_flight)
    yield from (up, slots, in_flight)


def _gpu_families(nodes: Sequence[NodeView]) -> Iterator[Metric]:
    gpu_labels = ["node", "gpu_index", "gpu_uuid"]  # the UUID joins DCGM's series
    info = GaugeMetricFamily(
        "comfy_node_gpu_info", "1 per GPU of a node.", labels=[*gpu_labels, "gpu_model"]
    )
    gauges = _GpuGauges(gpu_labels)
    for node in nodes:
        for gpu in node.health.gpus if node.health else []:
            labels = [node.node_id, str(gpu.index), gpu.uuid or ""]
            info.add_metric([*labels, gpu.name], 1)
            gauges.add(labels, gpu)
    yield info
    yield from gauges.families()


class _GpuGauges:
    """The readings of each GPU; one left out where NVML gave none (no sample, not 0)."""

    def __init__(self, labels: list[str]) -> None:
        def gauge(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=labels)

        self.vram = gauge("comfy_node_vram_used_bytes", "VRAM in use on the GPU.")
        self.vram_total = gauge("comfy_node_vram_total_bytes", "The GPU's VRAM.")
        self.temperature = gauge("comfy_node_gpu_temperature_celsius", "The GPU's temperature.")
        self.utilization = gauge("comfy_node_gpu_utilization_ratio", "The GPU's utilization (0-1).")
        self.power = gauge("comfy_node_gpu_power_watts", "Power the GPU draws.")
        self.power_limit = gauge(
            "comfy_node_gpu_power_limit_watts", "The power limit the driver enforces."
        )
        self.last_xid = gauge(
            "comfy_node_gpu_last_xid", "The code of the GPU's latest critical XID error."
        )
        self.xid_errors = CounterMetricFamily(
            "comfy_node_gpu_xid_errors",
            "Critical XID errors of the GPU since its service started.",
            labels=labels,
        )

    def add(self, labels: list[str], gpu: GpuInfo) -> None:
        readings: list[tuple[GaugeMetricFamily | CounterMetricFamily, float | None]] = [
            (self.vram, gpu.memory_used_bytes),
            (self.vram_total, gpu.memory_total_bytes),
            (self.temperature, gpu.temperature_c),
            (self.utilization, _ratio(gpu.utilization_percent)),
            (self.power, gpu.power_watts),
            (self.power_limit, gpu.power_limit_watts),
            (self.last_xid, gpu.last_xid),
            (self.xid_errors, gpu.xid_errors),
        ]
        for family, reading in readings:
            if reading is not None:
                family.add_metric(labels, reading)

    def families(self) -> list[Metric]:
        return [
            self.vram, self.vram_total, self.temperature, self.utilization, self.power,
            self.power_limit, self.xid_errors, self.last_xid,
        ]  # fmt: skip


def _ratio(percent: float | None) -> float | None:
    return percent / 100 if percent is not None else None
