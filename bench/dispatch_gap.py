"""How long a node's ComfyUI sits idle between two tasks, with and without prefetch.

For each ``--slots-per-node`` value (default 1, then 2), starts a fresh 2-node cluster (Redis,
2 emulated ComfyUIs, 2 comfy-services, 1 balancer, each its own process), submits a batch of
identical-length txt2img tasks through the balancer and waits until all have finished. Then
it reads each ComfyUI's ``/history`` and measures, per node, the gap between one prompt's
``execution_success`` and the next prompt's ``execution_start``. With 1 slot the next task is
dispatched only after the previous one finished; with 2 it already waits in ComfyUI's own
queue. Also checks, via ``/emulator/stats``, that every task ran exactly once.

    ./dev bench dispatch_gap [--tasks 30] [--steps 10] [--step-time 0.02] [--slots 1 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

import httpx
from _common import API, TERMINAL, LocalCluster, local_cluster, percentile, print_grid

from comfy_testkit.graphs import txt2img
from comfy_testkit.stack import AUTH_HEADERS

TARGET_GAP_MS = 20.0


@dataclass(frozen=True)
class Execution:
    prompt_id: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class NodeGaps:
    node_id: str
    runs: list[Execution]  # by start time

    @property
    def pairs(self) -> list[tuple[Execution, Execution]]:
        return list(pairwise(self.runs))

    @property
    def gaps_ms(self) -> list[float]:
        return [float(after.start_ms - before.end_ms) for before, after in self.pairs]

    @property
    def span_ms(self) -> float:
        return float(self.runs[-1].end_ms - self.runs[0].start_ms) if self.runs else 0.0

    @property
    def idle_share(self) -> float:
        return sum(self.gaps_ms) / self.span_ms if self.span_ms else float("nan")


@dataclass(frozen=True)
class TaskTimes:
    dispatched_ms: float  # the balancer placed it (its last attempt)
    finished_ms: float  # the service recorded its end


@dataclass(frozen=True)
class RunResult:
    slots: int
    nodes: list[NodeGaps]
    times: dict[str, TaskTimes]
    submit_s: float
    wall_s: float
    not_succeeded: int
    lost: int
    duplicated: int
    unexpected: int

    @property
    def all_gaps(self) -> list[float]:
        return [gap for node in self.nodes for gap in node.gaps_ms]

    @property
    def idle_share(self) -> float:
        span = sum(node.span_ms for node in self.nodes)
        return sum(self.all_gaps) / span if span else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30, help="tasks per run")
    parser.add_argument("--steps", type=int, default=10, help="KSampler steps per task")
    parser.add_argument("--step-time", type=float, default=0.02, help="seconds per step")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2], help="slots per node")
    args = parser.parse_args()

    results = [_run(slots, args.tasks, args.steps, args.step_time) for slots in args.slots]
    print(
        f"{args.tasks} tasks x {args.steps} steps x {args.step_time * 1000:.0f} ms "
        f"(~{args.steps * args.step_time * 1000:.0f} ms each) on 2 nodes, per run\n"
    )
    _print_gaps(results)
    print()
    _print_breakdown(results)
    _print_checks(results)
    print(_summary(results))


def _run(slots: int, tasks: int, steps: int, step_time_s: float) -> RunResult:
    balancer_args = ["--slots-per-node", str(slots)]
    with (
        local_cluster(2, step_time_s=step_time_s, balancer_args=balancer_args) as cluster,
        httpx.Client(timeout=30, headers=AUTH_HEADERS) as http,
    ):
        started = time.perf_counter()
        ids = _submit_batch(http, cluster.balancer.url, tasks, steps)
        submit_s = time.perf_counter() - started
        timeout_s = 30 + 3 * tasks * steps * step_time_s
        statuses = _wait_until_finished(http, cluster.balancer.url, ids, timeout_s)
        wall_s = time.perf_counter() - started
        nodes = [_node_gaps(http, node.node_id, node.emulator.url) for node in cluster.nodes]
        times = {task_id: _task_times(http, cluster.balancer.url, task_id) for task_id in ids}
        counts = _execution_counts(http, cluster)
    lost = sum(counts.get(task_id, 0) == 0 for task_id in ids)
    return RunResult(
        slots=slots,
        nodes=nodes,
        times=times,
        submit_s=submit_s,
        wall_s=wall_s,
        not_succeeded=sum(status != "succeeded" for status in statuses),
        lost=lost,
        duplicated=sum(counts.get(task_id, 0) > 1 for task_id in ids),
        unexpected=len(set(counts) - set(ids)),
    )


def _submit_batch(http: httpx.Client, balancer: str, tasks: int, steps: int) -> list[str]:
    """Submit all tasks at once (a few in parallel), so the queue is never empty early on."""

    def submit(index: int) -> str:
        # A distinct seed per task: ComfyUI would serve an identical sampler from its cache.
        graph = txt2img(f"gap/{index}", steps=steps, seed=index)
        response = http.post(f"{balancer}{API}/generate", json={"prompt": graph})
        response.raise_for_status()
        return str(response.json()["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(submit, range(tasks)))


def _wait_until_finished(
    http: httpx.Client, balancer: str, ids: list[str], timeout_s: float
) -> list[str]:
    """Poll gently (one request per tick, oldest unfinished task first) not to disturb the run."""
    statuses: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(statuses) < len(ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(statuses)} of {len(ids)} tasks finished in time")
        status = http.get(f"{balancer}{API}/tasks/{ids[len(statuses)]}").json()["status"]
        if status in TERMINAL:
            statuses.append(status)
        else:
            time.sleep(0.1)
    return statuses


def _node_gaps(http: httpx.Client, node_id: str, comfyui: str) -> NodeGaps:
    history: dict[str, Any] = http.get(f"{comfyui}/history").json()
    runs = sorted(_executions(history.items()), key=lambda run: run.start_ms)
    return NodeGaps(node_id, runs)


def _executions(entries: Iterable[tuple[str, Any]]) -> Iterable[Execution]:
    for prompt_id, entry in entries:
        stamps = {event: data["timestamp"] for event, data in entry["status"]["messages"]}
        if "execution_start" in stamps and "execution_success" in stamps:
            yield Execution(prompt_id, stamps["execution_start"], stamps["execution_success"])


def _task_times(http: httpx.Client, balancer: str, task_id: str) -> TaskTimes:
    task = http.get(f"{balancer}{API}/tasks/{task_id}").json()
    return TaskTimes(
        dispatched_ms=_ms(task["attempt_log"][-1]["dispatched_at"]),
        finished_ms=_ms(task["finished_at"]),
    )


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def _execution_counts(http: httpx.Client, cluster: LocalCluster) -> dict[str, int]:
    """Times each prompt id started executing, summed over every ComfyUI."""
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        stats = http.get(f"{node.emulator.url}/emulator/stats").json()
        for prompt_id, times in stats["executions"].items():
            counts[prompt_id] = counts.get(prompt_id, 0) + int(times)
    return counts


def _print_gaps(results: list[RunResult]) -> None:
    header = ("slots/node", "node", "runs", "gap p50 ms", "p95 ms", "max ms", "idle share")
    rows: list[tuple[str, ...]] = []
    for result in results:
        for node in result.nodes:
            rows.append(_gap_row(result.slots, node.node_id, len(node.runs), node.gaps_ms))
            rows[-1] = (*rows[-1], f"{node.idle_share:.1%}")
        total = sum(len(node.runs) for node in result.nodes)
        rows.append(
            (*_gap_row(result.slots, "all", total, result.all_gaps), f"{result.idle_share:.1%}")
        )
    print_grid(header, rows)


def _gap_row(slots: int, node: str, runs: int, gaps: list[float]) -> tuple[str, ...]:
    stats = (percentile(gaps, 50), percentile(gaps, 95), max(gaps, default=float("nan")))
    return (str(slots), node, str(runs), *(f"{value:.0f}" for value in stats))


LEGS = (
    "ComfyUI done -> service recorded it",
    "-> balancer placed the next task",
    "-> ComfyUI started it",
)


def _print_breakdown(results: list[RunResult]) -> None:
    """Where a gap goes when nothing is prefetched: the three legs add up to the gap."""
    header = ("slots/node: leg", "p50 ms", "p95 ms", "max ms")
    rows: list[tuple[str, ...]] = []
    for result in results:
        if result.slots != 1:
            continue  # with prefetch the next task was placed long before the gap
        for name, samples in zip(LEGS, _legs(result), strict=True):
            stats = (percentile(samples, 50), percentile(samples, 95), max(samples))
            rows.append((f"{result.slots}: {name}", *(f"{value:.1f}" for value in stats)))
    if rows:
        print_grid(header, rows)
        print()


def _legs(result: RunResult) -> tuple[list[float], list[float], list[float]]:
    report, balancer, placement = [], [], []
    for node in result.nodes:
        for before, after in node.pairs:
            ended, placed = result.times[before.prompt_id], result.times[after.prompt_id]
            report.append(ended.finished_ms - before.end_ms)
            balancer.append(placed.dispatched_ms - ended.finished_ms)
            placement.append(after.start_ms - placed.dispatched_ms)
    return report, balancer, placement


def _print_checks(results: list[RunResult]) -> None:
    header = ("slots/node", "submit s", "wall s", "not ok", "lost", "duplicated", "unexpected")
    rows = [
        (
            str(r.slots),
            f"{r.submit_s:.2f}",
            f"{r.wall_s:.2f}",
            str(r.not_succeeded),
            str(r.lost),
            str(r.duplicated),
            str(r.unexpected),
        )
        for r in results
    ]
    print_grid(header, rows)


def _summary(results: list[RunResult]) -> str:
    parts = []
    for result in results:
        gaps = result.all_gaps
        parts.append(
            f"slots {result.slots}: gap p50/p95/max "
            f"{percentile(gaps, 50):.0f}/{percentile(gaps, 95):.0f}/{max(gaps, default=0):.0f} ms, "
            f"idle {result.idle_share:.1%}"
        )
    prefetch = [r for r in results if r.slots >= 2]
    verdict = ""
    if prefetch:
        worst = max(max(r.all_gaps, default=0.0) for r in prefetch)
        held = "met" if worst < TARGET_GAP_MS else "NOT met"
        verdict = f"; target max gap < {TARGET_GAP_MS:.0f} ms with prefetch: {held}"
    lost = sum(r.lost for r in results)
    duplicated = sum(r.duplicated for r in results)
    failed = sum(r.not_succeeded for r in results)
    return (
        f"summary: {'; '.join(parts)}{verdict}; "
        f"lost {lost}, duplicated {duplicated}, not succeeded {failed}"
    )


if __name__ == "__main__":
    main()
