"""Scheduling quality on a mixed-speed fleet: makespan against its lower bound.

Starts, once per mode, a fresh fleet of emulated ComfyUIs with speeds 1x, 1x, 2x, 4x (emulator
``--speed``), each behind its own comfy-service, plus one balancer (every component its own
process), and runs the same job mix: ``--jobs`` txt2img tasks whose sampler step counts are
drawn from {5, 10, 20, 40} with a fixed seed, all submitted at once. Before the clock starts,
each node runs one warm-up task, so it has measured its speed as a fleet in service has
(``--cold`` skips this). Modes:

- ``earliest-finish``, ``least-loaded``, ``round-robin``, ``random``: the balancer's late
  binding (``--strategy``) with ``--slots`` per node (default 2: one running, one prefetched
  in ComfyUI's own queue);
- ``early``: early binding, no balancer (it runs, idle): job i goes straight to service i mod 4
  (``POST /api/v1/generate``), so each ComfyUI queues its share up front.

Figures per mode: makespan = first submit -> last task finished (``finished_at``); lower bound
= total sampler work / total speed = sum(steps x step time) / sum(speeds) (no schedule can beat
it; it ignores per-task overhead and that a job cannot be split); wait = ``created_at`` ->
``started_at`` per task; per node: the step time it measured (health ``speed``), utilisation =
time its ComfyUI spent executing (history ``execution_start`` -> ``execution_success``) /
makespan, overhead = execution time beyond steps x nominal step time, and when it ran out of
work. Also checks, via ``/emulator/stats``, that every task ran exactly once.

The same job order is also scheduled on paper with no overhead, for reference: late binding
with the run's slots per node and with 1 slot (what a speed-blind strategy does), and each job
to the node where it would finish first (what ``earliest-finish`` does with exact knowledge).

What keeps a run above the bound: the tail (with a job prefetched on each node the last jobs
are bound a little early, and the slow nodes run dry before the fast ones) and per-task
overhead that does not shrink with speed (the non-sampler nodes, event handling); both weigh
more at short step times (``--step-time 0.2`` is about an SDXL step on a mid-range GPU).

    ./dev bench scheduling_quality [--jobs 60] [--step-time 0.05] [--speeds 1 1 2 4] [--seed 7]
        [--slots 2] [--modes earliest-finish least-loaded round-robin random early] [--cold]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from _common import (
    API,
    LocalCluster,
    Node,
    epoch,
    execution_counts,
    local_cluster,
    percentile,
    print_grid,
    task_of_prompt,
    wait_until_finished,
    warm_up,
)

from comfy_testkit.graphs import txt2img
from comfy_testkit.stack import RunningComponent

STEP_CHOICES = (5, 10, 20, 40)
MODES = ("earliest-finish", "least-loaded", "round-robin", "random", "early")
TARGET_RATIO = 1.05


@dataclass(frozen=True)
class Job:
    task_id: str
    steps: int


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    status: str
    node_id: str | None
    wait_s: float
    finished_s: float  # since the first submit


@dataclass(frozen=True)
class NodeResult:
    node_id: str
    speed: float
    jobs: int
    steps: int
    busy_s: float
    overhead_ms: float  # mean execution time beyond the sampler's share, per job
    done_s: float  # last execution end, since the first submit
    measured_step_ms: float  # as the node measured it (NodeHealth.speed), nan if unknown


@dataclass(frozen=True)
class RunResult:
    mode: str
    makespan_s: float
    tasks: list[TaskResult]
    nodes: list[NodeResult]
    lost: int
    duplicated: int

    @property
    def waits(self) -> list[float]:
        return [task.wait_s for task in self.tasks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60, help="jobs in the mix")
    parser.add_argument("--step-time", type=float, default=0.05, help="seconds per step at 1x")
    parser.add_argument("--speeds", type=float, nargs="+", default=[1, 1, 2, 4], help="fleet")
    parser.add_argument("--seed", type=int, default=7, help="seed of the step-count draw")
    parser.add_argument("--slots", type=int, default=2, help="balancer slots per node")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--cold",
        action="store_true",
        help="skip the warm-up task per node: nodes start with no measured speed",
    )
    args = parser.parse_args()

    draw = random.Random(args.seed)
    steps = [draw.choice(STEP_CHOICES) for _ in range(args.jobs)]
    work_s = sum(steps) * args.step_time
    bound_s = work_s / sum(args.speeds)
    results = [
        _run(mode, steps, args.step_time, args.speeds, args.slots, warm=not args.cold)
        for mode in args.modes
    ]

    mix = {choice: steps.count(choice) for choice in STEP_CHOICES}
    print(
        f"{args.jobs} jobs, steps {mix} (seed {args.seed}), {args.step_time * 1000:.0f} ms/step "
        f"at 1x; fleet speeds {' '.join(f'{s:g}x' for s in args.speeds)}; "
        f"{args.slots} slots/node with the balancer\n"
        f"total work {work_s:.2f} s at 1x; lower bound = work / {sum(args.speeds):g} = "
        f"{bound_s:.2f} s\n"
    )
    ideal = {
        f"{args.slots} slots": _fifo_schedule(steps, args.speeds, args.step_time, args.slots),
        "1 slot": _fifo_schedule(steps, args.speeds, args.step_time, 1),
        "speed-aware": _earliest_finish(steps, args.speeds, args.step_time),
    }
    print(
        "same order, zero overhead, simulated: "
        + ", ".join(
            f"{name} {value:.2f} s ({value / bound_s:.2f})" for name, value in ideal.items()
        )
        + "\n"
    )
    _print_runs(results, bound_s)
    print()
    _print_nodes(results)
    print(_summary(results, bound_s, {name: value / bound_s for name, value in ideal.items()}))


def _fifo_schedule(steps: list[int], speeds: list[float], step_time_s: float, slots: int) -> float:
    """Makespan of late binding with no overhead: jobs in arrival order, each to a node with a
    free slot (at the start the least-loaded fill: a, b, c, d, a, ...), run in order there."""
    pending = list(steps)
    busy_until = [0.0] * len(speeds)
    ends: list[tuple[float, int]] = []  # (end of a job, node): one entry per used slot
    for _ in range(slots):
        for node, speed in enumerate(speeds):
            if pending:
                busy_until[node] += pending.pop(0) * step_time_s / speed
                heapq.heappush(ends, (busy_until[node], node))
    while ends:
        freed_at, node = heapq.heappop(ends)
        if pending:  # the freed slot takes the next job; it runs after the node's others
            busy_until[node] = max(busy_until[node], freed_at) + (
                pending.pop(0) * step_time_s / speeds[node]
            )
            heapq.heappush(ends, (busy_until[node], node))
    return max(busy_until)


def _earliest_finish(steps: list[int], speeds: list[float], step_time_s: float) -> float:
    """Makespan if each job, in order, went where it would finish first (needs speeds and job
    lengths, which the balancer does not know)."""
    busy_until = [0.0] * len(speeds)
    for count in steps:
        node = min(
            range(len(speeds)), key=lambda i: busy_until[i] + count * step_time_s / speeds[i]
        )
        busy_until[node] += count * step_time_s / speeds[node]
    return max(busy_until)


def _run(
    mode: str,
    steps: list[int],
    step_time_s: float,
    speeds: list[float],
    slots: int,
    *,
    warm: bool,
) -> RunResult:
    strategy = "least-loaded" if mode == "early" else mode
    balancer_args = ["--strategy", strategy, "--slots-per-node", str(slots)]
    emulator_args = [["--speed", f"{speed:g}"] for speed in speeds]
    jobs = [Job(f"sq-{mode}-{index}", count) for index, count in enumerate(steps)]
    with (
        local_cluster(
            len(speeds),
            step_time_s=step_time_s,
            balancer_args=balancer_args,
            emulator_args=emulator_args,
        ) as cluster,
        httpx.Client(timeout=30) as http,
    ):
        # Where each task is sent and read back: the balancer, or the service it was sent to.
        readers = {
            job.task_id: (
                cluster.balancer
                if mode != "early"
                else cluster.nodes[index % len(cluster.nodes)].service
            )
            for index, job in enumerate(jobs)
        }
        if warm:
            warm_up(http, cluster, step_time_s)
        started = time.time()
        _submit_all(http, jobs, readers)
        timeout_s = 60 + 2 * sum(steps) * step_time_s
        records = wait_until_finished(http, readers, timeout_s)
        tasks = [_task_result(record, started) for record in records]
        makespan_s = max(task.finished_s for task in tasks)
        by_id = {job.task_id: job for job in jobs}
        # Each attempt has its own prompt id in ComfyUI: the node's history speaks of those.
        tasks_of = task_of_prompt(records)
        by_prompt = {prompt_id: by_id[task_id] for prompt_id, task_id in tasks_of.items()}
        measured = _measured_step_ms(http, cluster)
        nodes = [
            _node_result(http, node, speed, by_prompt, step_time_s, started, measured)
            for node, speed in zip(cluster.nodes, speeds, strict=True)
        ]
        counts = execution_counts(http, cluster, tasks_of)
    return RunResult(
        mode=mode,
        makespan_s=makespan_s,
        tasks=tasks,
        nodes=nodes,
        lost=sum(task.status != "succeeded" or counts.get(task.task_id, 0) == 0 for task in tasks),
        duplicated=sum(counts.get(job.task_id, 0) > 1 for job in jobs),
    )


def _submit_all(http: httpx.Client, jobs: list[Job], readers: dict[str, RunningComponent]) -> None:
    """All jobs at once, in order (a few requests in flight so the submit burst is short)."""

    def submit(index: int) -> None:
        job = jobs[index]
        # A distinct seed and prefix per job: ComfyUI would serve an identical sampler from
        # its cache.
        graph = txt2img(job.task_id, steps=job.steps, seed=index)
        body = {"task_id": job.task_id, "prompt": graph}
        target = readers[job.task_id]
        response = http.post(f"{target.url}{API}/generate", json=body, headers=target.auth_headers)
        response.raise_for_status()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(submit, range(len(jobs))))


def _task_result(record: dict[str, Any], started: float) -> TaskResult:
    created, began, ended = (
        epoch(record[name]) for name in ("created_at", "started_at", "finished_at")
    )
    return TaskResult(
        task_id=str(record["id"]),
        status=str(record["status"]),
        node_id=record.get("node_id"),
        wait_s=began - created,
        finished_s=ended - started,
    )


def _node_result(
    http: httpx.Client,
    node: Node,
    speed: float,
    jobs: dict[str, Job],
    step_time_s: float,
    started: float,
    measured_step_ms: dict[str, float],
) -> NodeResult:
    history: dict[str, Any] = http.get(f"{node.emulator.url}/history").json()
    busy_s, overheads, steps, done_s = 0.0, list[float](), 0, 0.0
    for prompt_id, entry in history.items():
        stamps = {event: data["timestamp"] for event, data in entry["status"]["messages"]}
        if prompt_id not in jobs or not {"execution_start", "execution_success"} <= set(stamps):
            continue  # the warm-up, or a run that did not succeed
        run_s = (stamps["execution_success"] - stamps["execution_start"]) / 1000
        busy_s += run_s
        job = jobs[prompt_id]
        steps += job.steps
        overheads.append(run_s - job.steps * step_time_s / speed)
        done_s = max(done_s, stamps["execution_success"] / 1000 - started)
    return NodeResult(
        node_id=node.node_id,
        speed=speed,
        jobs=len(overheads),
        steps=steps,
        busy_s=busy_s,
        overhead_ms=statistics.fmean(overheads) * 1000 if overheads else float("nan"),
        done_s=done_s,
        measured_step_ms=measured_step_ms.get(node.node_id, float("nan")),
    )


def _measured_step_ms(http: httpx.Client, cluster: LocalCluster) -> dict[str, float]:
    balancer = cluster.balancer
    nodes = http.get(f"{balancer.url}{API}/nodes", headers=balancer.auth_headers).json()
    return {
        node["node_id"]: node["health"]["speed"]["seconds_per_step"] * 1000
        for node in nodes
        if node["health"] and node["health"]["speed"]
    }


def _label(mode: str) -> str:
    return "early binding (round-robin)" if mode == "early" else f"late binding, {mode}"


def _print_runs(results: list[RunResult], bound_s: float) -> None:
    speeds = [f"util {node.speed:g}x" for node in results[0].nodes]
    header = ("mode", "makespan s", "/ bound", "wait mean s", "wait p95 s", *speeds, "lost", "dup")
    rows = [
        (
            _label(r.mode),
            f"{r.makespan_s:.2f}",
            f"{r.makespan_s / bound_s:.2f}",
            f"{statistics.fmean(r.waits):.2f}",
            f"{percentile(r.waits, 95):.2f}",
            *(f"{node.busy_s / r.makespan_s:.0%}" for node in r.nodes),
            str(r.lost),
            str(r.duplicated),
        )
        for r in results
    ]
    print_grid(header, rows)


def _print_nodes(results: list[RunResult]) -> None:
    header = (
        "mode: node",
        "speed",
        "step ms measured",
        "jobs",
        "steps",
        "busy s",
        "overhead ms/job",
        "idle from s",
    )
    rows = [
        (
            f"{r.mode}: {node.node_id}",
            f"{node.speed:g}x",
            f"{node.measured_step_ms:.1f}",
            str(node.jobs),
            str(node.steps),
            f"{node.busy_s:.2f}",
            f"{node.overhead_ms:.0f}",
            f"{node.done_s:.2f}",
        )
        for r in results
        for node in r.nodes
    ]
    print_grid(header, rows)


def _summary(results: list[RunResult], bound_s: float, ideal: dict[str, float]) -> str:
    ratios = ", ".join(f"{r.mode} {r.makespan_s / bound_s:.2f}" for r in results)
    late = [r for r in results if r.mode != "early"]
    verdict = ""
    if late:
        best = min(late, key=lambda r: r.makespan_s)
        ratio = best.makespan_s / bound_s
        held = "met" if ratio <= TARGET_RATIO else "NOT met"
        # Where the rest went: the fleet idles while the last jobs finish (tail), and the
        # executions take longer than their sampler share (overhead).
        first_idle = min(node.done_s for node in best.nodes)
        # Overhead in wall time on a node costs its speed in work: weighted, over the fleet.
        overhead_s = sum(n.jobs * n.overhead_ms / 1000 * n.speed for n in best.nodes)
        capacity = sum(node.speed for node in best.nodes)
        ideals = ", ".join(f"{name} {value:.2f}" for name, value in ideal.items())
        verdict = (
            f"; target makespan <= {TARGET_RATIO:.2f} x bound: {held} "
            f"(best {best.mode} {ratio:.2f}: first node out of work at "
            f"{first_idle:.2f} s of {best.makespan_s:.2f} s; this order with no overhead: "
            f"{ideals}; per-task overhead ~{overhead_s / capacity:.2f} s of fleet time)"
        )
    lost = sum(r.lost for r in results)
    duplicated = sum(r.duplicated for r in results)
    return (
        f"summary: makespan / lower bound: {ratios}{verdict}; lost {lost}, duplicated {duplicated}"
    )


if __name__ == "__main__":
    main()
