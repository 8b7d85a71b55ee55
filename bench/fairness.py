"""Fair sharing: light tenants behind a heavy tenant's backlog, FIFO against fair, one run.

Starts, once per queue policy (``--policies``, default ``fifo`` then ``fair``), a fresh fleet
of emulated ComfyUIs at speeds 1x, 1x, 2x, 4x, each behind its own comfy-service, a fresh
embedded Redis and one balancer with authentication on and ``--queue-policy POLICY`` (every
component its own process). Each node runs a warm-up task first (so costs and ETAs start from
measured speeds). The admin key then creates one API key per tenant (``POST /api/v1/keys``,
default share: weight 1, band standard). The heavy tenant submits ``--heavy-jobs`` (200) jobs,
4 requests in flight; right after, the ``--light-tenants`` (5) light tenants submit
``--light-jobs`` (5) each, all tenants at once, each its jobs in turn. Every job is the same
txt2img graph of ``--steps`` sampler steps (a distinct seed each), ``--step-time`` seconds a
step at 1x.

Figures, from each task's ``created_at``, ``started_at``, ``finished_at`` and ``node_id`` as the
balancer's API reports them, and its ``eta`` as the submit answered it:

- job time: mean ``started_at`` -> ``finished_at`` over every task of the run (on this fleet
  about the job's time at 2x);
- light first start: per light tenant, its first submit -> the first of its tasks to start;
  split into the time that task waited in the queue (-> its first placement, ``attempt_log``)
  and on its node, behind the task running there (prefetch: ``--slots`` 2);
- heavy tasks placed ahead: per light tenant, heavy tasks placed after its first submit and
  before its first placement;
- light done: per light tenant, its first submit -> the last of its tasks finished;
- heavy done: the heavy tenant's first submit -> its last task finished;
- Jain's fairness index, (sum x)^2 / (n sum x^2), of the GPU-seconds each tenant received in
  the contended window: from the first light submit until the last light task finished. A
  tenant's GPU-seconds = the part of each of its tasks' runs inside the window, times the
  speed of the node that ran it (1x-GPU-seconds: a second on the 4x node counts 4). 1.0 is
  an equal split; the light tenants ask for little, so fair queuing serves them in turns
  with the heavy tenant and the window holds about equal shares;
- makespan: the first submit -> the last task finished;
- ETA error: ``started_at`` minus the ``eta.start`` of the submit answer, per task (positive:
  started later than foretold); p50/p90 of its absolute value, and of that over the task's
  wait (``created_at`` -> ``started_at``) for tasks that waited at least one job time (a
  shorter wait makes the ratio meaningless).

Checks: with ``fair``, every light tenant's first task starts within one job time of its
submit (p95 of the light first starts <= the run's mean job time) while the heavy tenant has
a backlog; fair makespan within 2 % of FIFO's.

    ./dev bench fairness [--heavy-jobs 200] [--light-tenants 5] [--light-jobs 5] [--steps 20]
        [--step-time 0.1] [--speeds 1 1 2 4] [--slots 2] [--policies fifo fair]
        [--light-spacing 0]
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from _common import (
    API,
    LocalCluster,
    epoch,
    local_cluster,
    node_id,
    percentile,
    print_grid,
    wait_until_finished,
    warm_up,
)

from comfy_testkit.graphs import txt2img

POLICIES = ("fifo", "fair")
HEAVY = "heavy"
FIRST_START_TARGET = 1.0
"""A light tenant's first task starts within this many mean job times of its submit."""
MAKESPAN_TARGET = 1.02
"""Fair makespan over FIFO makespan, at most."""


@dataclass(frozen=True)
class Load:
    heavy_jobs: int
    light_tenants: int
    light_jobs: int
    steps: int
    step_time_s: float
    speeds: list[float]
    slots: int
    prefetch_lead_s: float
    light_spacing_s: float = 0.0
    """Light tenant i starts submitting i times this after the first (0: all at once)."""

    @property
    def lights(self) -> list[str]:
        return [f"light-{index + 1}" for index in range(self.light_tenants)]

    @property
    def work_s(self) -> float:
        """Sampler time of every job at 1x."""
        jobs = self.heavy_jobs + self.light_tenants * self.light_jobs
        return jobs * self.steps * self.step_time_s


@dataclass(frozen=True)
class TaskRun:
    task_id: str
    tenant: str
    created_s: float
    eta_start_s: float  # NaN: the submit answer had no ETA
    placed_s: float  # first placement on a node (attempt 1 dispatched)
    started_s: float
    finished_s: float
    node_id: str | None
    status: str

    @property
    def wait_s(self) -> float:
        return self.started_s - self.created_s

    @property
    def run_s(self) -> float:
        return self.finished_s - self.started_s

    @property
    def eta_error_s(self) -> float:
        return self.started_s - self.eta_start_s


@dataclass(frozen=True)
class Figures:
    policy: str
    tasks: int
    failed: int
    job_s: float
    backlog: int  # heavy tasks not started yet at the first light submit
    light_first_s: list[float]
    light_first_queue_s: list[float]  # of those: submit -> that task placed
    overtaken: list[int]  # per light tenant: heavy tasks placed after its submit, before its first
    light_done_s: list[float]
    heavy_done_s: float
    window_s: float
    gpu_s: dict[str, float]  # tenant -> 1x-GPU-seconds inside the window
    jain: float
    makespan_s: float
    eta_abs_s: dict[str, list[float]]  # "heavy" / "light" -> |ETA error| per task
    eta_rel: dict[str, list[float]]  # the same over the wait, tasks that waited >= a job time
    eta_bias_s: dict[str, float]  # mean signed error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heavy-jobs", type=int, default=200, help="jobs of the heavy tenant")
    parser.add_argument("--light-tenants", type=int, default=5, help="light tenants")
    parser.add_argument("--light-jobs", type=int, default=5, help="jobs per light tenant")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps of every job")
    parser.add_argument("--step-time", type=float, default=0.1, help="seconds per step at 1x")
    parser.add_argument("--speeds", type=float, nargs="+", default=[1, 1, 2, 4], help="fleet")
    parser.add_argument("--slots", type=int, default=2, help="balancer slots per node")
    parser.add_argument(
        "--prefetch-lead", type=float, default=0.5,
        help="the balancer's --prefetch-lead-s (a large value prefetches at once)",
    )  # fmt: skip
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument(
        "--light-spacing", type=float, default=0.0,
        help="seconds between two light tenants' arrivals (default 0: all at once)",
    )  # fmt: skip
    args = parser.parse_args()
    load = Load(
        heavy_jobs=args.heavy_jobs,
        light_tenants=args.light_tenants,
        light_jobs=args.light_jobs,
        steps=args.steps,
        step_time_s=args.step_time,
        speeds=args.speeds,
        slots=args.slots,
        prefetch_lead_s=args.prefetch_lead,
        light_spacing_s=args.light_spacing,
    )
    results = [_figures(policy, _run(policy, load), load) for policy in args.policies]

    print(
        f"heavy: {load.heavy_jobs} jobs, then {load.light_tenants} light tenants x "
        f"{load.light_jobs} jobs; {load.steps} steps x {load.step_time_s * 1000:.0f} ms at 1x; "
        f"fleet {' '.join(f'{s:g}x' for s in load.speeds)}, {load.slots} slots/node, "
        f"prefetch lead {load.prefetch_lead_s:g} s; "
        f"work {load.work_s:.1f} s at 1x, lower bound {load.work_s / sum(load.speeds):.1f} s\n"
    )
    _print_side_by_side(results)
    print()
    _print_eta(results)
    print()
    print(_summary(results))


def _run(policy: str, load: Load) -> list[TaskRun]:
    balancer_args = [
        *("--queue-policy", policy, "--slots-per-node", str(load.slots)),
        *("--prefetch-lead-s", f"{load.prefetch_lead_s:g}"),
    ]
    emulator_args = [["--speed", f"{speed:g}"] for speed in load.speeds]
    with (
        local_cluster(
            len(load.speeds),
            step_time_s=load.step_time_s,
            balancer_args=balancer_args,
            emulator_args=emulator_args,
        ) as cluster,
        httpx.Client(timeout=30) as http,
    ):
        warm_up(http, cluster, load.step_time_s)
        headers = {tenant: _key_headers(http, cluster, tenant) for tenant in [HEAVY, *load.lights]}
        submit = _submitter(http, cluster, policy, load.steps, headers)
        answers = _submit_heavy(submit, load.heavy_jobs)
        answers += _submit_lights(submit, load.lights, load.light_jobs, load.light_spacing_s)
        tenant_of = {str(answer["id"]): tenant for tenant, answer in answers}
        eta_of = {str(answer["id"]): _eta_start(answer) for _, answer in answers}
        timeout_s = 60 + 3 * load.work_s / sum(load.speeds)
        readers = dict.fromkeys(tenant_of, cluster.balancer)
        records = wait_until_finished(http, readers, timeout_s)
    return [_task_run(record, tenant_of, eta_of) for record in records]


def _key_headers(http: httpx.Client, cluster: LocalCluster, tenant: str) -> dict[str, str]:
    """A new API key for the tenant (default share and limits), made with the admin key."""
    balancer = cluster.balancer
    response = http.post(
        f"{balancer.url}{API}/keys", json={"name": tenant}, headers=balancer.auth_headers
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['key']}"}


Submit = Callable[[str, int], dict[str, Any]]
"""Submit a tenant's job number N; the answer's body."""


def _submitter(
    http: httpx.Client,
    cluster: LocalCluster,
    policy: str,
    steps: int,
    headers: dict[str, dict[str, str]],
) -> Submit:
    def submit(tenant: str, index: int) -> dict[str, Any]:
        task_id = f"fair-{policy}-{tenant}-{index}"
        # A distinct seed and prefix per job: ComfyUI would serve an identical sampler from
        # its cache.
        seed = zlib.crc32(task_id.encode())
        body = {"task_id": task_id, "prompt": txt2img(task_id, steps=steps, seed=seed)}
        url = f"{cluster.balancer.url}{API}/generate"
        response = http.post(url, json=body, headers=headers[tenant])
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    return submit


def _submit_heavy(submit: Submit, jobs: int) -> list[tuple[str, dict[str, Any]]]:
    """The backlog, in order (a few requests in flight so the burst is short)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [(HEAVY, answer) for answer in pool.map(lambda i: submit(HEAVY, i), range(jobs))]


def _submit_lights(
    submit: Submit, lights: list[str], jobs: int, spacing_s: float
) -> list[tuple[str, dict[str, Any]]]:
    """Every light tenant, each submitting its jobs in turn: all at once, or the i-th
    ``spacing_s`` x i later (the workload's shape: arrivals spread in time)."""

    def one_tenant(order: int, tenant: str) -> list[tuple[str, dict[str, Any]]]:
        time.sleep(order * spacing_s)
        return [(tenant, submit(tenant, index)) for index in range(jobs)]

    with ThreadPoolExecutor(max_workers=len(lights)) as pool:
        batches = pool.map(one_tenant, range(len(lights)), lights)
        return [pair for pairs in batches for pair in pairs]


def _eta_start(answer: dict[str, Any]) -> float:
    eta = answer.get("eta")
    return epoch(eta["start"]) if eta else float("nan")


def _task_run(
    record: dict[str, Any], tenant_of: dict[str, str], eta_of: dict[str, float]
) -> TaskRun:
    task_id = str(record["id"])
    return TaskRun(
        task_id=task_id,
        tenant=tenant_of[task_id],
        created_s=epoch(record["created_at"]),
        eta_start_s=eta_of[task_id],
        placed_s=epoch((record.get("attempt_log") or [{}])[0].get("dispatched_at")),
        started_s=epoch(record["started_at"]),
        finished_s=epoch(record["finished_at"]),
        node_id=record.get("node_id"),
        status=str(record["status"]),
    )


# figures ----------------------------------------------------------------------------------


def _figures(policy: str, tasks: list[TaskRun], load: Load) -> Figures:
    done = [task for task in tasks if task.status == "succeeded"]
    lights = [task for task in done if task.tenant != HEAVY]
    heavy = [task for task in done if task.tenant == HEAVY]
    job_s = statistics.fmean(task.run_s for task in done)
    window = (min(t.created_s for t in lights), max(t.finished_s for t in lights))
    speed_of = {node_id(index): speed for index, speed in enumerate(load.speeds)}
    gpu_s = _gpu_seconds(done, window, speed_of)
    classes = {"heavy": heavy, "light": lights}
    return Figures(
        policy=policy,
        tasks=len(tasks),
        failed=len(tasks) - len(done),
        job_s=job_s,
        backlog=sum(task.started_s > window[0] for task in heavy),
        light_first_s=_per_tenant(lights, lambda own: min(t.started_s for t in own)),
        light_first_queue_s=_per_tenant(lights, lambda own: _first_to_start(own).placed_s),
        overtaken=_overtaken(lights, heavy),
        light_done_s=_per_tenant(lights, lambda own: max(t.finished_s for t in own)),
        heavy_done_s=max(t.finished_s for t in heavy) - min(t.created_s for t in heavy),
        window_s=window[1] - window[0],
        gpu_s=gpu_s,
        jain=_jain([gpu_s.get(tenant, 0.0) for tenant in [HEAVY, *load.lights]]),
        makespan_s=max(t.finished_s for t in done) - min(t.created_s for t in tasks),
        eta_abs_s={name: [abs(t.eta_error_s) for t in own] for name, own in classes.items()},
        eta_rel={
            name: [abs(t.eta_error_s) / t.wait_s for t in own if t.wait_s >= job_s]
            for name, own in classes.items()
        },
        eta_bias_s={
            name: statistics.fmean(t.eta_error_s for t in own) for name, own in classes.items()
        },
    )


def _per_tenant(tasks: list[TaskRun], moment: Callable[[list[TaskRun]], float]) -> list[float]:
    """Per tenant: its first submit -> the moment its tasks give."""
    tenants = sorted({task.tenant for task in tasks})
    figures = []
    for tenant in tenants:
        own = [task for task in tasks if task.tenant == tenant]
        figures.append(moment(own) - min(task.created_s for task in own))
    return figures


def _first_to_start(tasks: list[TaskRun]) -> TaskRun:
    return min(tasks, key=lambda task: task.started_s)


def _overtaken(lights: list[TaskRun], heavy: list[TaskRun]) -> list[int]:
    """Per light tenant: heavy tasks placed after its first submit and before its first
    placement (a fair queue places almost none: the light tenant takes the next turn)."""
    counts = []
    for tenant in sorted({task.tenant for task in lights}):
        own = [task for task in lights if task.tenant == tenant]
        since, until = min(t.created_s for t in own), min(t.placed_s for t in own)
        counts.append(sum(since < task.placed_s < until for task in heavy))
    return counts


def _gpu_seconds(
    tasks: list[TaskRun], window: tuple[float, float], speed_of: dict[str, float]
) -> dict[str, float]:
    """Per tenant, the 1x-GPU-seconds its tasks ran inside the window."""
    received: dict[str, float] = {}
    for task in tasks:
        inside_s = min(task.finished_s, window[1]) - max(task.started_s, window[0])
        if inside_s > 0:
            work_s = inside_s * speed_of.get(task.node_id or "", 1.0)
            received[task.tenant] = received.get(task.tenant, 0.0) + work_s
    return received


def _jain(shares: Sequence[float]) -> float:
    squares = sum(share * share for share in shares)
    return sum(shares) ** 2 / (len(shares) * squares) if squares else float("nan")


# output -----------------------------------------------------------------------------------


def _print_side_by_side(results: list[Figures]) -> None:
    rows: list[tuple[str, Callable[[Figures], float], str]] = [
        ("mean job time s", lambda f: f.job_s, "{:.2f}"),
        ("heavy backlog at light submit (tasks)", lambda f: f.backlog, "{:.0f}"),
        ("light first start mean s", lambda f: statistics.fmean(f.light_first_s), "{:.2f}"),
        ("light first start p95 s", lambda f: percentile(f.light_first_s, 95), "{:.2f}"),
        ("light first start p95 / job time", lambda f: _first_start_ratio(f), "{:.2f}"),
        (
            "  of the mean: in the queue s",
            lambda f: statistics.fmean(f.light_first_queue_s),
            "{:.2f}",
        ),
        (
            "  of the mean: placed, behind the node's task s",
            lambda f: statistics.fmean(f.light_first_s) - statistics.fmean(f.light_first_queue_s),
            "{:.2f}",
        ),
        ("heavy tasks placed ahead, mean", lambda f: statistics.fmean(f.overtaken), "{:.1f}"),
        ("heavy tasks placed ahead, max", lambda f: max(f.overtaken), "{:.0f}"),
        ("light done mean s", lambda f: statistics.fmean(f.light_done_s), "{:.2f}"),
        ("light done p95 s", lambda f: percentile(f.light_done_s, 95), "{:.2f}"),
        ("heavy done s", lambda f: f.heavy_done_s, "{:.2f}"),
        ("contended window s", lambda f: f.window_s, "{:.2f}"),
        ("heavy GPU-s in window", lambda f: f.gpu_s.get(HEAVY, 0.0), "{:.1f}"),
        ("light GPU-s in window, mean", lambda f: _light_gpu_mean(f), "{:.1f}"),
        ("Jain index in window", lambda f: f.jain, "{:.3f}"),
        ("makespan s", lambda f: f.makespan_s, "{:.2f}"),
        ("failed tasks", lambda f: f.failed, "{:.0f}"),
    ]
    header = ("figure", *(f.policy for f in results), *_ratio_header(results))
    cells = [
        (
            name,
            *(fmt.format(value(f)) for f in results),
            *_ratio_cells([value(f) for f in results]),
        )
        for name, value, fmt in rows
    ]
    print_grid(header, cells)


def _print_eta(results: list[Figures]) -> None:
    header = (
        "ETA of the submit answer vs started_at",
        "tasks",
        "|err| p50 s",
        "|err| p90 s",
        "mean err s",
        "waited >= job",
        "|err|/wait p50",
        "|err|/wait p90",
    )
    cells = [
        (
            f"{f.policy}: {name}",
            str(len(f.eta_abs_s[name])),
            f"{percentile(f.eta_abs_s[name], 50):.2f}",
            f"{percentile(f.eta_abs_s[name], 90):.2f}",
            f"{f.eta_bias_s[name]:+.2f}",
            str(len(f.eta_rel[name])),
            f"{percentile(f.eta_rel[name], 50):.2f}",
            f"{percentile(f.eta_rel[name], 90):.2f}",
        )
        for f in results
        for name in ("heavy", "light")
    ]
    print_grid(header, cells)


def _ratio_header(results: list[Figures]) -> tuple[str, ...]:
    if len(results) != 2:
        return ()
    return (f"{results[1].policy}/{results[0].policy}",)


def _ratio_cells(values: list[float]) -> tuple[str, ...]:
    if len(values) != 2:
        return ()
    return (f"{values[1] / values[0]:.2f}" if values[0] else "-",)


def _first_start_ratio(f: Figures) -> float:
    return percentile(f.light_first_s, 95) / f.job_s


def _light_gpu_mean(f: Figures) -> float:
    lights = [gpu_s for tenant, gpu_s in f.gpu_s.items() if tenant != HEAVY]
    return statistics.fmean(lights) if lights else 0.0


def _summary(results: list[Figures]) -> str:
    by_policy = {f.policy: f for f in results}
    parts = []
    fair, fifo = by_policy.get("fair"), by_policy.get("fifo")
    if fair is not None:
        ratio = _first_start_ratio(fair)
        verdict = "PASS" if ratio <= FIRST_START_TARGET and fair.backlog > 0 else "FAIL"
        parts.append(
            f"light first start p95 {percentile(fair.light_first_s, 95):.2f} s = {ratio:.2f} "
            f"job times (target <= {FIRST_START_TARGET:g}, heavy backlog {fair.backlog}): "
            f"{verdict}"
        )
    if fair is not None and fifo is not None:
        ratio = fair.makespan_s / fifo.makespan_s
        verdict = "PASS" if ratio <= MAKESPAN_TARGET else "FAIL"
        parts.append(
            f"makespan fair/fifo {ratio:.3f} (target <= {MAKESPAN_TARGET:g}): {verdict}; "
            f"light done mean fair/fifo "
            f"{statistics.fmean(fair.light_done_s) / statistics.fmean(fifo.light_done_s):.2f}; "
            f"Jain {fifo.jain:.2f} -> {fair.jain:.2f}"
        )
    eta = ", ".join(
        f"{f.policy} |err| p50/p90 heavy {percentile(f.eta_abs_s['heavy'], 50):.1f}/"
        f"{percentile(f.eta_abs_s['heavy'], 90):.1f} s light "
        f"{percentile(f.eta_abs_s['light'], 50):.1f}/{percentile(f.eta_abs_s['light'], 90):.1f} s"
        for f in results
    )
    failed = sum(f.failed for f in results)
    return f"summary: {'; '.join(parts)}; ETA {eta}; failed {failed}"


if __name__ == "__main__":
    main()
