"""The service's Prometheus metrics (README "Metrics"): the outcomes of the tasks this
process ended (``comfy_shared.task_metrics``), the times it freed ComfyUI's memory after an
out-of-memory error, the model loads it measured, and its node's gauges read at scrape time
from the health document it publishes (so a scrape never waits on ComfyUI). Model files are
labelled by family and a hash of their name, never by name."""

from __future__ import annotations

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from comfy_shared.model_family import model_family, name_hash8
from comfy_shared.models import NodeHealth
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_clients import StreamClients
from comfy_shared.task_metrics import TaskOutcomes

MODEL_SWITCH_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
"""From a small checkpoint read from a page cache to a video model from a network disk."""


class ServiceMetrics:
    def __init__(self, redis: Redis, keys: RedisKeys, node_id: str) -> None:
        self.registry = CollectorRegistry()
        self.outcomes = TaskOutcomes(self.registry)
        self.out_of_memory_frees = Counter(
            "comfy_node_out_of_memory_frees",
            "Times ComfyUI ran out of memory and the service freed it (POST /free).",
            ["node"],
            registry=self.registry,
        )
        self.model_switch = Histogram(
            "comfy_model_switch_seconds",
            "Time ComfyUI took to load a model file a task needed (learned from successful "
            "runs: their time beyond a run with the model resident).",
            ["node", "model_family"],
            buckets=MODEL_SWITCH_BUCKETS,
            registry=self.registry,
        )
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._process = psutil.Process()

    def freed_memory(self) -> None:
        self.out_of_memory_frees.labels(self._node_id).inc()

    def observe_model_switch(self, model_file: str, seconds: float) -> None:
        """A load of ``model_file`` measured (``ModelProfiler``'s ``on_switch``)."""
        self.model_switch.labels(self._node_id, model_family(model_file)).observe(seconds)

    async def exposition(self, streams: StreamClients) -> bytes:
        raw = await self._redis.get(self._keys.node_health(self._node_id))
        health = NodeHealth.model_validate_json(raw) if raw else None
        node = _NodeGauges(self._node_id, health, self._process.memory_info().rss, streams)
        gauges = CollectorRegistry(auto_describe=False)
        gauges.register(node)
        return generate_latest(self.registry) + generate_latest(gauges)


class _NodeGauges(Collector):
    def __init__(
        self, node_id: str, health: NodeHealth | None, rss_bytes: int, streams: StreamClients
    ) -> None:
        self._node_id = node_id
        self._health = health
        self._rss_bytes = rss_bytes
        self._streams = streams

    def collect(self) -> list[Metric]:
        labels = ["node"]
        comfy = self._health.comfyui if self._health else None
        up = GaugeMetricFamily(
            "comfy_node_up", "1 if the node's ComfyUI answered its last check.", labels=labels
        )
        up.add_metric([self._node_id], 1 if comfy is not None and comfy.reachable else 0)
        remaining = GaugeMetricFamily(
            "comfy_node_queue_remaining",
            "Prompts running or waiting in the node's ComfyUI.",
            labels=labels,
        )
        if comfy is not None and comfy.reachable:
            remaining.add_metric([self._node_id], comfy.queue_running + comfy.queue_pending)
        rss = GaugeMetricFamily(
            "comfy_node_ram_rss_bytes",
            "Resident memory of the comfy-service process.",
            labels=labels,
        )
        rss.add_metric([self._node_id], self._rss_bytes)
        return [
            up,
            remaining,
            rss,
            self._restarts(),
            self._loaded_models(),
            self._streams.family(kinds=["sse"]),  # no WebSocket here
        ]

    def _loaded_models(self) -> Metric:
        info = GaugeMetricFamily(
            "comfy_node_loaded_model_info",
            "1 per model file believed loaded on the node's GPU (its family and a hash of its "
            "name, never the name).",
            labels=["node", "model_family", "model_hash8"],
        )
        for name in self._health.profile.resident if self._health is not None else []:
            info.add_metric([self._node_id, model_family(name), name_hash8(name)], 1)
        return info

    def _restarts(self) -> Metric:
        restarts = CounterMetricFamily(
            "comfy_node_restarts",
            "Times the service restarted the ComfyUI it supervises (--comfyui-command), by "
            "reason: died, or recycled.",
            labels=["node", "reason"],
        )
        if self._health is not None:
            lifecycle = self._health.lifecycle
            recycled = lifecycle.comfyui_recycles
            restarts.add_metric([self._node_id, "died"], lifecycle.comfyui_restarts - recycled)
            restarts.add_metric([self._node_id, "recycled"], recycled)
        return restarts
