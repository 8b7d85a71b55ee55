"""Shared bits of the benchmarks: starting a local stack or cluster and summarising results."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from comfy_shared.task_state import TaskStatus
from comfy_stack.embedded_redis import RedisServer, start_redis_server
from comfy_testkit.graphs import txt2img
from comfy_testkit.stack import (
    AUTH_HEADERS,
    RunningComponent,
    start_balancer_process,
    start_emulator_process,
    start_service_process,
)

API = "/api/v1"
TERMINAL = frozenset(status.value for status in TaskStatus if status.is_terminal)
"""Task statuses (as the API spells them) after which nothing changes."""
QUIET_LOGS = ("--log-level", "WARNING")


@dataclass(frozen=True)
class Latencies:
    name: str
    samples_ms: list[float]
    wall_s: float

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p95(self) -> float:
        return percentile(self.samples_ms, 95)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    @property
    def max(self) -> float:
        return max(self.samples_ms, default=float("nan"))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def throughput(self) -> float:
        return len(self.samples_ms) / self.wall_s


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def timed(get: Callable[[], httpx.Response]) -> tuple[float, int]:
    """One request: (milliseconds, body bytes); a refusal stops the bench."""
    started = time.perf_counter()
    response = get()
    elapsed_ms = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed_ms, len(response.content)


def alternating_reads(
    targets: Mapping[str, Callable[[], httpx.Response]], requests: int
) -> tuple[list[Latencies], dict[str, int]]:
    """``requests`` reads of each target, taking turns so that all see the same machine:
    their latencies (in the targets' order) and each one's body size."""
    samples: dict[str, list[float]] = {name: [] for name in targets}
    sizes: dict[str, int] = {}
    wall = time.monotonic()
    for _ in range(requests):
        for name, get in targets.items():
            elapsed_ms, sizes[name] = timed(get)
            samples[name].append(elapsed_ms)
    wall_s = time.monotonic() - wall
    return [Latencies(name, values, wall_s) for name, values in samples.items()], sizes


def print_grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = (f"{cell:>{width}}" for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))


def print_table(rows: list[Latencies], baseline: Latencies) -> None:
    header = ("target", "n", "req/s", "mean ms", "p50 ms", "p99 ms", "p50 x")
    cells = [
        (
            row.name,
            str(len(row.samples_ms)),
            f"{row.throughput:.0f}",
            f"{row.mean:.2f}",
            f"{row.p50:.2f}",
            f"{row.p99:.2f}",
            f"{row.p50 / baseline.p50:.2f}" if baseline.p50 else "nan",
        )
        for row in rows
    ]
    print_grid(header, cells)


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """User + system CPU seconds used so far by each named process (all its threads)."""
    used: dict[str, float] = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        used[name] = times.user + times.system
    return used


@dataclass
class LocalStack:
    redis_url: str
    emulator: RunningComponent
    service: RunningComponent


@dataclass
class Node:
    node_id: str
    emulator: RunningComponent
    service: RunningComponent
    step_time_s: float = 0.0
    emulator_args: Sequence[str] = ()
    service_args: Sequence[str] = ()


@dataclass
class LocalCluster:
    redis: RedisServer
    nodes: list[Node]
    balancer: RunningComponent
    log_dir: Path
    root: Path | None = None
    stop: ExitStack | None = None

    def add_node(
        self,
        node_id: str,
        *,
        step_time_s: float = 0.0,
        emulator_args: Sequence[str] = (),
        service_args: Sequence[str] = (),
    ) -> Node:
        """Start one more emulator + service pair (stopped with the cluster); it is appended
        to ``nodes``. The caller waits for the balancer to see it, if it needs to."""
        if self.root is None or self.stop is None:
            raise RuntimeError("this cluster was not started by local_cluster()")
        node = _start_node(
            self.stop, self.root, self.redis.url, node_id, step_time_s, emulator_args, service_args
        )
        self.nodes.append(node)
        return node

    def restart_emulator(self, node: Node) -> None:
        """Start the node's ComfyUI again, on its port and folder (after it was killed)."""
        port = _port(node.emulator.url)
        args = (node.node_id, node.step_time_s, node.emulator_args)
        node.emulator = self._started(_start_emulator(self._root(), *args, port=port))

    def restart_service(self, node: Node) -> None:
        """Start the node's service again, on its port (after it was killed)."""
        port = _port(node.service.url)
        args = (self.redis.url, node.node_id, node.emulator.url, node.service_args)
        node.service = self._started(_start_service(self._root(), *args, port=port))

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("this cluster was not started by local_cluster()")
        return self.root

    def _started(self, component: RunningComponent) -> RunningComponent:
        if self.stop is None:
            raise RuntimeError("this cluster was not started by local_cluster()")
        self.stop.callback(component.stop)
        return component

    def pids(self) -> dict[str, int]:
        """Process id of every component, by a short name."""
        pids = {"redis": self.redis.process.pid, "balancer": self.balancer.process.pid}
        for node in self.nodes:
            pids[f"emulator {node.node_id}"] = node.emulator.process.pid
            pids[f"service {node.node_id}"] = node.service.process.pid
        return pids


@contextmanager
def local_stack(step_time_s: float = 0.0) -> Iterator[LocalStack]:
    """Redis, one emulator and one service as separate processes (this process only drives)."""
    with _started_redis() as (root, redis), ExitStack() as stop:
        node = _start_node(stop, root, redis.url, "node-a", step_time_s)
        yield LocalStack(redis.url, node.emulator, node.service)


@contextmanager
def local_cluster(
    nodes: int = 2,
    *,
    step_time_s: float = 0.0,
    balancer_args: Sequence[str] = (),
    emulator_args: Sequence[Sequence[str]] = (),
    service_args: Sequence[str] = (),
) -> Iterator[LocalCluster]:
    """Redis, ``nodes`` emulator + service pairs and one balancer, each its own process.

    ``emulator_args``: extra emulator flags per node, in node order (e.g. ``["--speed", "2"]``);
    ``service_args``: extra flags of every service. Yields once the balancer sees every node
    ready; stops everything in reverse order."""
    with _started_redis() as (root, redis), ExitStack() as stop:
        started = [
            _start_node(
                stop,
                root,
                redis.url,
                node_id(index),
                step_time_s,
                emulator_args[index] if index < len(emulator_args) else (),
                service_args,
            )
            for index in range(nodes)
        ]
        balancer = start_balancer_process(
            root / "logs", redis_url=redis.url, extra_args=[*QUIET_LOGS, *balancer_args]
        )
        stop.callback(balancer.stop)
        wait_for_ready_nodes(balancer.url, nodes)
        yield LocalCluster(redis, started, balancer, root / "logs", root, stop)


def node_id(index: int) -> str:
    """``node-a``, ``node-b``... as ``local_cluster`` names its nodes (``node-z1`` after z)."""
    letter = chr(ord("a") + index % 26)
    return f"node-{letter}" if index < 26 else f"node-{letter}{index // 26}"


@contextmanager
def local_redis() -> Iterator[tuple[Path, RedisServer]]:
    """An embedded Redis alone, and a scratch folder (for logs) removed afterwards."""
    with _started_redis() as started:
        yield started


@contextmanager
def _started_redis() -> Iterator[tuple[Path, RedisServer]]:
    with tempfile.TemporaryDirectory(prefix="comfy-bench-") as tmp:
        root = Path(tmp)
        redis = start_redis_server(root)
        try:
            yield root, redis
        finally:
            redis.stop()


def _start_node(
    stop: ExitStack,
    root: Path,
    redis_url: str,
    node_id: str,
    step_time_s: float,
    emulator_args: Sequence[str] = (),
    service_args: Sequence[str] = (),
) -> Node:
    emulator = _start_emulator(root, node_id, step_time_s, emulator_args)
    stop.callback(emulator.stop)
    service = _start_service(root, redis_url, node_id, emulator.url, service_args)
    stop.callback(service.stop)
    return Node(node_id, emulator, service, step_time_s, emulator_args, service_args)


def _start_emulator(
    root: Path,
    node_id: str,
    step_time_s: float,
    emulator_args: Sequence[str],
    *,
    port: int | None = None,
) -> RunningComponent:
    suffix = node_id.removeprefix("node-")
    return start_emulator_process(
        root / "logs",
        root / f"emulator-{suffix}",
        name=f"emulator-{suffix}",
        port=port,
        step_time_s=step_time_s,
        extra_args=["--quiet", *emulator_args],
    )


def _start_service(
    root: Path,
    redis_url: str,
    node_id: str,
    comfyui_url: str,
    service_args: Sequence[str],
    *,
    port: int | None = None,
) -> RunningComponent:
    return start_service_process(
        root / "logs",
        redis_url=redis_url,
        comfyui_url=comfyui_url,
        node_id=node_id,
        port=port,
        extra_args=[*QUIET_LOGS, *service_args],
    )


def _port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url}")
    return port


def wait_for_ready_nodes(balancer_url: str, count: int, timeout_s: float = 20.0) -> None:
    """Until the balancer lists at least ``count`` nodes in state ``ready``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = httpx.get(f"{balancer_url}{API}/nodes", timeout=5, headers=AUTH_HEADERS).json()
        if sum(node["state"] == "ready" for node in nodes) >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"the balancer did not see {count} ready nodes within {timeout_s:.0f} s")


def warm_up(http: httpx.Client, cluster: LocalCluster, step_time_s: float) -> None:
    """Two tasks per node, straight to its service (the first loads the checkpoint, the
    second is hot), then wait until every node published a measured speed: as in a fleet that
    has been running (see comfy_service.speed), so the balancer's placement and cost
    predictions start from measurements."""
    for node in cluster.nodes:
        for seed in (10_000, 10_001):
            graph = txt2img(f"warm-up-{node.node_id}-{seed}", steps=10, seed=seed)
            body = {"task_id": f"warm-up-{node.node_id}-{seed}", "prompt": graph}
            url = f"{node.service.url}{API}/generate"
            http.post(url, json=body, headers=node.service.auth_headers).raise_for_status()
    deadline = time.monotonic() + 30 + 2 * 10 * 10 * step_time_s
    balancer = cluster.balancer
    while time.monotonic() < deadline:
        nodes = http.get(f"{balancer.url}{API}/nodes", headers=balancer.auth_headers).json()
        if all(node["health"] and node["health"]["speed"] for node in nodes):
            return
        time.sleep(0.1)
    raise SystemExit("the nodes did not publish a measured speed after the warm-up")


def wait_until_finished(
    http: httpx.Client, readers: Mapping[str, RunningComponent], timeout_s: float
) -> list[dict[str, Any]]:
    """The record of every task (id -> the balancer or service that has it) once it ended, in
    the mapping's order. Polls gently: one request per tick, oldest unfinished task first."""
    ids = list(readers)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < len(ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(records)} of {len(ids)} tasks finished in time")
        reader = readers[ids[len(records)]]
        url = f"{reader.url}{API}/tasks/{ids[len(records)]}"
        record: dict[str, Any] = http.get(url, headers=reader.auth_headers).json()
        if record["status"] in TERMINAL:
            records.append(record)
        else:
            time.sleep(0.05)
    return records


def task_of_prompt(records: list[dict[str, Any]]) -> dict[str, str]:
    """Prompt id -> task id, for every attempt of every task (a task sent straight to a
    service has no attempt log: its prompt id is its task id)."""
    tasks_of = {str(record["id"]): str(record["id"]) for record in records}
    for record in records:
        for attempt in record.get("attempt_log") or []:
            if attempt.get("prompt_id"):
                tasks_of[str(attempt["prompt_id"])] = str(record["id"])
    return tasks_of


def execution_counts(
    http: httpx.Client, cluster: LocalCluster, tasks_of: dict[str, str]
) -> dict[str, int]:
    """Times each task started executing, summed over its prompts on every ComfyUI."""
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        stats = http.get(f"{node.emulator.url}/emulator/stats").json()
        for prompt_id, times in stats["executions"].items():
            task_id = tasks_of.get(prompt_id, prompt_id)
            counts[task_id] = counts.get(task_id, 0) + int(times)
    return counts


def epoch(iso: str | None) -> float:
    """An API timestamp as seconds since the epoch (NaN for none)."""
    return datetime.fromisoformat(iso).timestamp() if iso else float("nan")
