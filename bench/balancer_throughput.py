"""Submit and status-read latency of the balancer under a steady load, next to one
comfy-service and ComfyUI itself at the same rate.

Starts Redis, 2 emulated ComfyUIs, 2 comfy-services and 1 balancer, each its own process, a
second balancer with no nodes (it only queues: its intake path alone), a third one placing
onto 2 stand-in nodes (``bench/_standin.py``, a process that accepts each placement and marks
it succeeded at once: the balancer's whole path, accept, place and send, without ComfyUI and
service work competing for the same cores) with a fourth, ``--no-dispatch`` replica beside it
(it only accepts; the third places), and a load generator in one more process. For
each target in turn (ComfyUI's ``POST /prompt``, one service's and then each balancer's
``POST /api/v1/generate``), the generator submits an instant graph at a fixed rate, open loop
(on schedule, not after the previous answer); this process waits until every accepted task
has run and the servers are idle; then the generator reads each task's status at the same
rate (``GET /history/{id}`` or ``GET /api/v1/tasks/{id}``). Prints the latencies, the CPU
each process spent per task, and a summary.

    ./dev bench balancer_throughput [--rate 200] [--duration 10] [--read-duration 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from _common import (
    API,
    QUIET_LOGS,
    TERMINAL,
    LocalCluster,
    cpu_seconds,
    local_cluster,
    percentile,
    print_grid,
    wait_for_ready_nodes,
)
from _loadgen import Kind, LoadPlan, LoadResult, run_load
from _standin import standin_process

from comfy_testkit.stack import AUTH_HEADERS, RunningComponent, start_balancer_process

TARGET_P99_MS = 5.0
DRAIN_TIMEOUT_S = 120.0
IDLE_WINDOW_S = 0.5
IDLE_CORES = 0.1


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    submit: Kind
    read: Kind
    runs_tasks: bool = True  # False: nothing consumes what it accepts
    on_emulators: bool = True  # False: stand-in nodes finish the tasks, no ComfyUI runs them
    headers: tuple[tuple[str, str], ...] = ()  # a service wants its internal token

    @property
    def is_comfyui(self) -> bool:
        return self.submit == "comfyui-submit"


@dataclass(frozen=True)
class TargetRun:
    target: Target
    submit: LoadResult
    read: LoadResult
    drain_s: float  # from the last answer until every accepted task had run and all was idle
    cpu_ms_per_task: dict[str, float]  # per process, submit start until drained


Load = Callable[[LoadPlan], LoadResult]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of submits")
    parser.add_argument("--read-duration", type=float, default=3, help="seconds of reads")
    args = parser.parse_args()

    queue_args = ["--max-queue", str(max(10_000, round(2 * args.rate * args.duration)))]
    spawn = multiprocessing.get_context("spawn")
    with (
        local_cluster(2, balancer_args=queue_args) as cluster,
        _intake_only_balancer(cluster, queue_args) as intake,
        _standin_balancers(cluster, queue_args) as (standin, api_only, standin_nodes),
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as generator,
        httpx.Client(timeout=30, headers=AUTH_HEADERS) as http,
    ):

        def load(plan: LoadPlan) -> LoadResult:
            return generator.submit(run_load, plan).result()

        pids = {
            **cluster.pids(),
            "balancer, no nodes": intake.process.pid,
            "balancer, stand-in nodes": standin.process.pid,
            "API-only replica": api_only.process.pid,
            "stand-in nodes": standin_nodes.pid,
        }
        runs = [
            _run_target(target, load, http, cluster, pids, args)
            for target in _targets(cluster, intake, standin, api_only)
        ]
    print(f"open loop at {args.rate:.0f} req/s; latency counted from each scheduled send\n")
    _print_latencies(runs)
    print()
    _print_cpu(runs, args.rate)
    print(_summary(runs, args.rate))


@contextmanager
def _intake_only_balancer(cluster: LocalCluster, args: list[str]) -> Iterator[RunningComponent]:
    """A second balancer under another key prefix, where no node publishes health: it only
    accepts and queues, so its submit latency is the intake path without the work behind it.
    (A prefix, not another Redis database: pub/sub signals would cross databases.)"""
    balancer = start_balancer_process(
        cluster.log_dir,
        redis_url=cluster.redis.url,
        name="balancer-no-nodes",
        extra_args=[*QUIET_LOGS, *args, "--redis-prefix", "bench-no-nodes"],
    )
    try:
        yield balancer
    finally:
        balancer.stop()


@contextmanager
def _standin_balancers(
    cluster: LocalCluster, args: list[str]
) -> Iterator[tuple[RunningComponent, RunningComponent, subprocess.Popen[bytes]]]:
    """Under their own prefix: a balancer placing onto 2 stand-in nodes (their own process,
    with the node classes of a real emulator), and an API-only replica beside it."""
    prefix = "bench-standin"
    started: list[RunningComponent] = []
    for name, extra in (("balancer-standin", []), ("balancer-standin-api", ["--no-dispatch"])):
        started.append(
            start_balancer_process(
                cluster.log_dir,
                redis_url=cluster.redis.url,
                name=name,
                extra_args=[*QUIET_LOGS, *args, "--redis-prefix", prefix, *extra],
            )
        )
    placing, api_only = started
    try:
        with standin_process(
            redis_url=cluster.redis.url,
            prefix=prefix,
            nodes=2,
            object_info_url=f"{cluster.nodes[0].emulator.url}/object_info",
        ) as standin:
            wait_for_ready_nodes(placing.url, 2)
            yield placing, api_only, standin
    finally:
        for balancer in started:
            balancer.stop()


def _targets(
    cluster: LocalCluster,
    intake: RunningComponent,
    standin: RunningComponent,
    api_only: RunningComponent,
) -> list[Target]:
    node = cluster.nodes[0]
    return [
        Target("ComfyUI", node.emulator.url, "comfyui-submit", "comfyui-read"),
        Target(
            f"service {node.node_id}",
            node.service.url,
            "api-submit",
            "api-read",
            headers=tuple(node.service.auth_headers.items()),
        ),
        Target("balancer, no nodes", intake.url, "api-submit", "api-read", runs_tasks=False),
        Target(
            "balancer, stand-in nodes", standin.url, "api-submit", "api-read", on_emulators=False
        ),
        Target(
            "API-only replica, stand-in nodes",
            api_only.url,
            "api-submit",
            "api-read",
            on_emulators=False,
        ),
        Target("balancer", cluster.balancer.url, "api-submit", "api-read"),
    ]


def _run_target(
    target: Target,
    load: Load,
    http: httpx.Client,
    cluster: LocalCluster,
    pids: dict[str, int],
    args: argparse.Namespace,
) -> TargetRun:
    cpu_before = cpu_seconds(pids)
    executions_before = _total_executions(http, cluster)
    submit = load(
        LoadPlan(target.url, target.submit, args.rate, args.duration, headers=target.headers)
    )
    answered = time.perf_counter()
    runs_here = target.runs_tasks and target.on_emulators
    expected = executions_before + (submit.accepted if runs_here else 0)
    _wait_drained(http, cluster, pids, target, expected, submit.ids)
    drain_s = time.perf_counter() - answered
    cpu_after = cpu_seconds(pids)
    accepted = max(1, submit.accepted)
    per_task = {name: (cpu_after[name] - cpu_before[name]) * 1000 / accepted for name in pids}
    plan = LoadPlan(
        target.url,
        target.read,
        args.rate,
        args.read_duration,
        tuple(submit.ids),
        headers=target.headers,
    )
    return TargetRun(target, submit, load(plan), drain_s, per_task)


def _wait_drained(
    http: httpx.Client,
    cluster: LocalCluster,
    pids: dict[str, int],
    target: Target,
    executions: int,
    ids: list[str],
) -> None:
    """Until every accepted task ran, a sample of records is final and the servers went idle
    (a service may still be catching up on ComfyUI's events). Cheap checks first: the full
    execution counts are a large document, fetched only once the queues look empty."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not (
        _queues_empty(http, cluster)
        and _total_executions(http, cluster) >= executions
        and (not target.runs_tasks or all(_is_finished(http, target, i) for i in ids[::100]))
        and _servers_idle(pids)
    ):
        if time.monotonic() > deadline:
            raise SystemExit(f"{target.name}: tasks still running after {DRAIN_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _servers_idle(pids: dict[str, int]) -> bool:
    """All servers together used under a tenth of a core over the last half second."""
    before = cpu_seconds(pids)
    time.sleep(IDLE_WINDOW_S)
    after = cpu_seconds(pids)
    return sum(after[name] - before[name] for name in pids) < IDLE_CORES * IDLE_WINDOW_S


def _queues_empty(http: httpx.Client, cluster: LocalCluster) -> bool:
    if http.get(f"{cluster.balancer.url}{API}/queue").json()["pending"]:
        return False
    return not any(
        http.get(f"{node.emulator.url}/prompt").json()["exec_info"]["queue_remaining"]
        for node in cluster.nodes
    )


def _total_executions(http: httpx.Client, cluster: LocalCluster) -> int:
    return sum(
        int(http.get(f"{node.emulator.url}/emulator/stats").json()["total_executions"])
        for node in cluster.nodes
    )


def _is_finished(http: httpx.Client, target: Target, task_id: str) -> bool:
    if target.is_comfyui:
        return bool(http.get(f"{target.url}/history/{task_id}").json())
    view = http.get(f"{target.url}{API}/tasks/{task_id}", headers=dict(target.headers)).json()
    return view["status"] in TERMINAL


def _print_latencies(runs: list[TargetRun]) -> None:
    header = (
        "target",
        "phase",
        "sent",
        "errors",
        "ok/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p50 x",
        "p99 x",
        "send lag p99",
        "client CPU",
    )
    base = runs[0]
    rows = []
    for run in runs:
        rows.append(_latency_row(run.target.name, "submit", run.submit, base.submit))
        rows.append(_latency_row(run.target.name, "status read", run.read, base.read))
    print_grid(header, rows)
    for run in runs:
        for phase, result in (("submit", run.submit), ("status read", run.read)):
            if result.errors:
                print(f"  {run.target.name} {phase} errors: {result.errors}")


def _latency_row(name: str, phase: str, result: LoadResult, base: LoadResult) -> tuple[str, ...]:
    p50, p99 = _p(result, 50), _p(result, 99)
    return (
        name,
        phase,
        str(result.sent),
        str(sum(result.errors.values())),
        f"{len(result.latencies_ms) / result.wall_s:.0f}",
        f"{p50:.2f}",
        f"{p99:.2f}",
        f"{_p(result, 100):.2f}",
        f"{p50 / _p(base, 50):.1f}",
        f"{p99 / _p(base, 99):.1f}",
        f"{percentile(result.send_lag_ms, 99):.2f}",
        f"{result.cpu_s / result.wall_s:.0%}",
    )


def _p(result: LoadResult, pct: float) -> float:
    return percentile(result.latencies_ms, pct)


def _print_cpu(runs: list[TargetRun], rate: float) -> None:
    """CPU milliseconds each process spent per submitted task, until all of them had run."""
    names = list(runs[0].cpu_ms_per_task)
    header = ("CPU ms per task (submit..drained)", *(run.target.name for run in runs))
    rows = [(name, *(f"{run.cpu_ms_per_task[name]:.2f}" for run in runs)) for name in names]
    rows.append(("load generator", *(f"{r.submit.cpu_s * 1000 / r.submit.sent:.2f}" for r in runs)))
    totals = [sum(run.cpu_ms_per_task.values()) for run in runs]
    rows.append(("all servers", *(f"{total:.2f}" for total in totals)))
    rows.append((f"= cores busy at {rate:.0f}/s", *(f"{t * rate / 1000:.2f}" for t in totals)))
    rows.append(("until idle after last answer (s)", *(f"{run.drain_s:.1f}" for run in runs)))
    print_grid(header, rows)


def _summary(runs: list[TargetRun], rate: float) -> str:
    comfy, service, intake, standin, api_only, balancer = runs
    p99 = _p(api_only.submit, 99)
    held = "met" if p99 < TARGET_P99_MS else "NOT met"
    errors = sum(sum(r.submit.errors.values()) + sum(r.read.errors.values()) for r in runs)
    client_cpu = max(r.submit.cpu_s / r.submit.wall_s for r in runs)
    return (
        f"summary: at {rate:.0f} submits/s, with stand-in nodes taking every task, an API-only "
        f"replica answers submits in p50/p99/max {_p(api_only.submit, 50):.2f}/{p99:.2f}/"
        f"{_p(api_only.submit, 100):.2f} ms (target p99 < {TARGET_P99_MS:.0f} ms: {held}) and "
        f"one balancer that also places in {_p(standin.submit, 50):.2f}/"
        f"{_p(standin.submit, 99):.2f} ms; p99 {_p(balancer.submit, 99):.2f} ms with the "
        f"whole stack on this machine, {_p(intake.submit, 99):.2f} ms with no nodes behind it, "
        f"{_p(service.submit, 99):.2f} ms via one service, {_p(comfy.submit, 99):.2f} ms "
        f"straight to ComfyUI; status read p99 {_p(balancer.read, 99):.2f} ms (service "
        f"{_p(service.read, 99):.2f}, ComfyUI {_p(comfy.read, 99):.2f}); {errors} errors; "
        f"load generator at most {client_cpu:.0%} of one core"
    )


if __name__ == "__main__":
    main()
