"""Model affinity: what placement saves in checkpoint switches on a mixed-model workload.

Starts, once per mode, a fresh fleet of emulated ComfyUIs with speeds 1x, 1x, 2x, 4x, each
behind its own comfy-service, plus one balancer (every component its own process). Each
ComfyUI has three checkpoints with the load costs of ../shared/fleet-notes.md (SD1.5 2 s,
SDXL 8 s, Flux fp8 20 s from the page cache, at 1x; times ``--load-scale``, since the
emulator's steps are about a third of a real GPU's; a load is divided by the node's speed
like everything else) and 24 GB of VRAM: SD1.5 and SDXL fit together, Flux (16.8 GB) only
alone. The job mix: ``--jobs`` txt2img tasks, each on one of the three models, in a fixed
random order, all submitted at once; SD1.5 jobs have 20 steps, SDXL 30, Flux 60 (a Flux step
costs about what two SDXL steps do).

Before the clock starts every node runs each model twice (the first run teaches its service
the load time, the second the run time), then ComfyUI's ``POST /free`` unloads every model
and the bench waits until each service has seen it: every mode starts from the same cold,
measured fleet. Modes:

- ``earliest-finish``: the balancer's default, model-aware (switch cost learned per node,
  residency followed through each node's queue, affinity window);
- ``earliest-finish-by-speed``: the same without models (the strategy as it was);
- ``least-loaded``;
- ``model-pressure``: SwarmUI's rule (an idle node with the model; else the most wanted model
  is loaded on a free node once a task waited 1.5 s, or at once when no node has it);
- ``early``: early binding, no balancer: job i goes straight to service i mod 4.

Figures per mode: makespan = first submit -> last task finished; switch time = seconds the
ComfyUIs spent loading models (the emulators' ``load_seconds``, wall time) and loads; wait =
``created_at`` -> ``started_at``. The lower bound: every second of work, the runs and the
fewest loads the fleet needs, over the fleet's total speed. The fewest loads: each model at
least once, and each node at least one model, the cheapest (SD1.5) for the nodes beyond the
third. No schedule beats it; it ignores that a job cannot be split.

    ./dev bench model_affinity [--jobs 120] [--step-time 0.05] [--load-scale 0.3] [--seed 11]
        [--modes earliest-finish earliest-finish-by-speed least-loaded model-pressure early]
"""

from __future__ import annotations

import argparse
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
)

from comfy_testkit.graphs import txt2img
from comfy_testkit.stack import RunningComponent


@dataclass(frozen=True)
class Model:
    name: str
    file: str
    load_s: float  # at 1x, from the page cache
    vram_mb: int
    steps: int


MODELS = (
    Model("SD1.5", "v1-5-pruned-emaonly-fp16.safetensors", 2.0, 2_000, 20),
    Model("SDXL", "juggernautXL_v8Rundiffusion.safetensors", 8.0, 6_900, 30),
    Model("Flux", "flux1-dev-fp8.safetensors", 20.0, 16_800, 60),
)
SPEEDS = (1.0, 1.0, 2.0, 4.0)
MODES = ("earliest-finish", "earliest-finish-by-speed", "least-loaded", "model-pressure", "early")
TARGET_BOUND_RATIO = 1.10
TARGET_SWITCH_SAVING = 0.25


@dataclass(frozen=True)
class Job:
    task_id: str
    model: Model


@dataclass(frozen=True)
class NodeResult:
    node_id: str
    speed: float
    jobs: dict[str, int]  # model name -> jobs run
    loads: int
    switch_s: float
    idle_from_s: float  # its last task's end, since the first submit


@dataclass(frozen=True)
class RunResult:
    mode: str
    makespan_s: float
    waits: list[float]
    nodes: list[NodeResult]
    lost: int
    duplicated: int

    @property
    def switch_s(self) -> float:
        return sum(node.switch_s for node in self.nodes)

    @property
    def loads(self) -> int:
        return sum(node.loads for node in self.nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=120, help="jobs in the mix")
    parser.add_argument("--step-time", type=float, default=0.05, help="seconds per step at 1x")
    parser.add_argument("--load-scale", type=float, default=0.3, help="x every model's load")
    parser.add_argument("--seed", type=int, default=11, help="seed of the job order")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()

    draw = random.Random(args.seed)
    models = [draw.choice(MODELS) for _ in range(args.jobs)]
    work_s = sum(model.steps * args.step_time for model in models)
    loads_s = fewest_loads_s(MODELS, len(SPEEDS)) * args.load_scale
    bound_s = (work_s + loads_s) / sum(SPEEDS)
    results = [_run(mode, models, args.step_time, args.load_scale) for mode in args.modes]

    mix = ", ".join(f"{m.name} {models.count(m)} x {m.steps} steps" for m in MODELS)
    costs = ", ".join(f"{m.name} {m.load_s * args.load_scale:g} s" for m in MODELS)
    print(
        f"{args.jobs} jobs ({mix}; seed {args.seed}), {args.step_time * 1000:.0f} ms/step at "
        f"1x; loads at 1x: {costs}"
        f"; fleet {' '.join(f'{s:g}x' for s in SPEEDS)}, 24 GB each\n"
        f"lower bound = (runs {work_s:.1f} s + fewest loads {loads_s:.1f} s) / "
        f"{sum(SPEEDS):g} = {bound_s:.2f} s\n"
    )
    _print_runs(results, bound_s)
    print()
    _print_nodes(results)
    print(_summary(results, bound_s))


def fewest_loads_s(models: tuple[Model, ...], nodes: int) -> float:
    """Every model loaded once, and every node beyond the models' count loads the cheapest."""
    cheapest = min(model.load_s for model in models)
    return sum(model.load_s for model in models) + max(0, nodes - len(models)) * cheapest


def _run(mode: str, models: list[Model], step_time_s: float, load_scale: float) -> RunResult:
    strategy = "least-loaded" if mode == "early" else mode
    emulator_args = [
        [
            "--speed",
            f"{speed:g}",
            "--load-scale",
            f"{load_scale:g}",
            *(arg for m in MODELS for arg in ("--model", m.file)),
            *(
                arg
                for m in MODELS
                for arg in ("--model-cost", f"{m.file}={m.load_s:g}:{m.vram_mb}")
            ),
        ]
        for speed in SPEEDS
    ]
    jobs = [Job(f"ma-{mode}-{index}", model) for index, model in enumerate(models)]
    with (
        local_cluster(
            len(SPEEDS),
            step_time_s=step_time_s,
            balancer_args=["--strategy", strategy],
            emulator_args=emulator_args,
        ) as cluster,
        httpx.Client(timeout=30) as http,
    ):
        readers = {
            job.task_id: cluster.balancer
            if mode != "early"
            else cluster.nodes[index % len(cluster.nodes)].service
            for index, job in enumerate(jobs)
        }
        _warm_up(http, cluster, step_time_s, load_scale)
        started = time.time()
        _submit_all(http, jobs, readers)
        timeout_s = 120 + 4 * sum(j.model.steps for j in jobs) * step_time_s
        records = wait_until_finished(http, readers, timeout_s)
        makespan_s = max(epoch(record["finished_at"]) for record in records) - started
        waits = [epoch(r["started_at"]) - epoch(r["created_at"]) for r in records]
        tasks_of = task_of_prompt(records)
        counts = execution_counts(http, cluster, tasks_of)
        model_of = {job.task_id: job.model.name for job in jobs}
        nodes = [
            _node_result(http, node, speed, records, model_of, started)
            for node, speed in zip(cluster.nodes, SPEEDS, strict=True)
        ]
    return RunResult(
        mode=mode,
        makespan_s=makespan_s,
        waits=waits,
        nodes=nodes,
        lost=sum(r["status"] != "succeeded" or counts.get(str(r["id"]), 0) == 0 for r in records),
        duplicated=sum(counts.get(job.task_id, 0) > 1 for job in jobs),
    )


def _node_result(
    http: httpx.Client,
    node: Node,
    speed: float,
    records: list[dict[str, Any]],
    model_of: dict[str, str],
    started: float,
) -> NodeResult:
    """What one node ran and what it spent loading models since the warm-up."""
    mine = [r for r in records if r.get("node_id") == node.node_id]
    stats = http.get(f"{node.emulator.url}/emulator/stats").json()
    jobs = {m.name: sum(model_of[str(r["id"])] == m.name for r in mine) for m in MODELS}
    return NodeResult(
        node_id=node.node_id,
        speed=speed,
        jobs=jobs,
        loads=sum(int(count) for count in stats["model_loads"].values()),
        switch_s=float(stats["load_seconds"]),
        idle_from_s=max((epoch(r["finished_at"]) - started for r in mine), default=0.0),
    )


def _warm_up(http: httpx.Client, cluster: LocalCluster, step_time_s: float, scale: float) -> None:
    """Each model twice on every node (straight to its service), then every model unloaded
    (ComfyUI's /free) and the emulators' counters reset, once every service saw it."""
    for node in cluster.nodes:
        for model in MODELS:
            for turn in (1, 2):
                seed = 100_000 + turn
                graph = txt2img("warm", steps=model.steps, seed=seed, checkpoint=model.file)
                task_id = f"warm-{node.node_id}-{model.name}-{turn}"
                url = f"{node.service.url}{API}/generate"
                body = {"task_id": task_id, "prompt": graph}
                http.post(url, json=body, headers=node.service.auth_headers).raise_for_status()
    per_node_s = sum(2 * (m.steps * step_time_s) + m.load_s * scale for m in MODELS)
    readers = {
        f"warm-{node.node_id}-{model.name}-{turn}": node.service
        for node in cluster.nodes
        for model in MODELS
        for turn in (1, 2)
    }
    wait_until_finished(http, readers, 60 + 3 * per_node_s)
    for node in cluster.nodes:
        http.post(f"{node.emulator.url}/free", json={"unload_models": True}).raise_for_status()
    _wait_until_nothing_resident(http, cluster)
    for node in cluster.nodes:
        http.post(f"{node.emulator.url}/emulator/stats/reset").raise_for_status()


def _wait_until_nothing_resident(http: httpx.Client, cluster: LocalCluster) -> None:
    balancer = cluster.balancer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = http.get(f"{balancer.url}{API}/nodes", headers=balancer.auth_headers).json()
        profiles = [node["health"]["profile"] for node in nodes if node["health"]]
        if len(profiles) == len(cluster.nodes) and not any(p["resident"] for p in profiles):
            return
        time.sleep(0.1)
    raise SystemExit("the services did not see ComfyUI unload its models after /free")


def _submit_all(http: httpx.Client, jobs: list[Job], readers: dict[str, RunningComponent]) -> None:
    """All jobs at once, in order (a few requests in flight so the submit burst is short)."""

    def submit(index: int) -> None:
        job = jobs[index]
        # A distinct seed per job: ComfyUI would serve an identical sampler from its cache.
        graph = txt2img(job.task_id, steps=job.model.steps, seed=index, checkpoint=job.model.file)
        target = readers[job.task_id]
        body = {"task_id": job.task_id, "prompt": graph}
        response = http.post(f"{target.url}{API}/generate", json=body, headers=target.auth_headers)
        response.raise_for_status()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(submit, range(len(jobs))))


def _label(mode: str) -> str:
    return "early binding (round-robin)" if mode == "early" else f"late binding, {mode}"


def _print_runs(results: list[RunResult], bound_s: float) -> None:
    header = ("mode", "makespan s", "/ bound", "switch s", "loads", "wait mean s", "wait p95 s")
    rows = [
        (
            _label(r.mode),
            f"{r.makespan_s:.2f}",
            f"{r.makespan_s / bound_s:.2f}",
            f"{r.switch_s:.1f}",
            str(r.loads),
            f"{statistics.fmean(r.waits):.2f}",
            f"{percentile(r.waits, 95):.2f}",
            f"{r.lost}/{r.duplicated}",
        )
        for r in results
    ]
    print_grid((*header, "lost/dup"), rows)


def _print_nodes(results: list[RunResult]) -> None:
    header = ("mode: node", "speed", *(f"{m.name} jobs" for m in MODELS), "loads", "switch s")
    rows = [
        (
            f"{r.mode}: {node.node_id}",
            f"{node.speed:g}x",
            *(str(node.jobs[m.name]) for m in MODELS),
            str(node.loads),
            f"{node.switch_s:.1f}",
            f"{node.idle_from_s:.2f}",
        )
        for r in results
        for node in r.nodes
    ]
    print_grid((*header, "idle from s"), rows)


def _summary(results: list[RunResult], bound_s: float) -> str:
    by_mode = {r.mode: r for r in results}
    verdicts = []
    aware = by_mode.get("earliest-finish")
    if aware is not None:
        ratio = aware.makespan_s / bound_s
        held = "met" if ratio <= TARGET_BOUND_RATIO else "NOT met"
        verdicts.append(
            f"earliest-finish {ratio:.2f} x bound (target <= {TARGET_BOUND_RATIO}): {held}"
        )
        swarm = by_mode.get("model-pressure")
        if swarm is not None and swarm.switch_s > 0:
            saving = 1 - aware.switch_s / swarm.switch_s
            held = "met" if saving >= TARGET_SWITCH_SAVING else "NOT met"
            verdicts.append(
                f"switch time {aware.switch_s:.1f} s vs model-pressure {swarm.switch_s:.1f} s: "
                f"{saving:.0%} less (target >= {TARGET_SWITCH_SAVING:.0%}): {held}"
            )
    lost = sum(r.lost for r in results)
    duplicated = sum(r.duplicated for r in results)
    return f"\nsummary: {'; '.join(verdicts)}; lost {lost}, duplicated {duplicated}"


if __name__ == "__main__":
    main()
