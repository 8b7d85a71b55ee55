"""Failover: how long a task whose node fails waits before it runs on another node, and what
ran or was completed twice.

Starts a 3-node cluster (Redis, 3 emulated ComfyUIs, 3 comfy-services, 1 balancer, each its own
process); the services publish health every ``--health-interval`` s (0.5: health TTL
max(2, round(3 x 0.5)) = 2 s); the balancer checks its placements every ``--sweep-interval`` s
(default 1, its own default; the test kit's clusters use 0.2) and takes the tasks of a node
whose ComfyUI has been unreachable for ``--comfyui-down-grace`` s back (default 10, its own
default). Three cases, ``--rounds`` kills each:

- ``node``: SIGKILL a service and its ComfyUI together; a fresh node under a new id replaces
  them. The balancer moves the task once the node's health key expired: target health TTL + 1 s.
- ``comfyui``: SIGKILL only the ComfyUI (emulator) behind its live service. The service reports
  it unreachable; the balancer moves the task once that lasted the grace: target grace + one
  health interval (the outage the balancer reads lags by up to one) + 1 s. Then the ComfyUI is
  started again on its port and the service finds it by itself ("back": until the balancer
  lists the node ready again).
- ``partition``: SIGKILL only the service; its ComfyUI runs on with the prompts it holds. Moved
  once the health key expired, like ``node``; the service is started again after that (more
  than the TTL after the kill) and withdraws what its ComfyUI still holds of attempts that
  moved ("back": until the node is ready; "ComfyUI clear": until its ComfyUI holds no prompt
  of the round, withdrawn or finished there).

Each round submits ``--batch`` long txt2img tasks (default 2, one fewer than the nodes, so a
node is idle and the time measured is failover, not waiting for a busy GPU); waits until the
first one runs on some node X, 2 sampler steps in (killed while still answering its placement,
the balancer would see the dispatch fail and move the task at once, a faster path); reads X's
``/emulator/stats`` and ``/history`` (a killed ComfyUI takes them along); kills; and polls the
balancer until that task runs on another node. The phases come from the task's record: taken
back (the lost attempt's ``ended_at``), placed again (the new attempt's ``dispatched_at``) and
running (``started_at``), each from the kill.

At the end, per case: lost = tasks not succeeded; extra executions = executions beyond one per
task (``/emulator/stats``, summed over the live emulators and the killed ones' last snapshots),
split into those cut short (the kill or a withdrawal interrupted them) and those that ran to
the end (the ComfyUI of an attempt that had moved finished it too); duplicated completions =
completions beyond one per task, read from each task's record and event stream (testkit
``audit``): must be 0, whatever ran twice.

    ./dev bench failover [--cases node,comfyui,partition] [--rounds 3] [--batch 2]
        [--steps 30] [--step-time 0.1] [--health-interval 0.5] [--sweep-interval 1]
        [--comfyui-down-grace 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from _common import (
    API,
    TERMINAL,
    LocalCluster,
    Node,
    local_cluster,
    node_id,
    percentile,
    print_grid,
    wait_for_ready_nodes,
)

from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_shared.redis_client import connect_redis
from comfy_testkit.audit import duplicated_completions, terminal_events
from comfy_testkit.graphs import txt2img
from comfy_testkit.stack import AUTH_HEADERS

NODES = 3
CASES = ("node", "comfyui", "partition")
POLL_S = 0.02
MIN_STEPS_BEFORE_KILL = 2
MAX_ATTEMPTS = 5
"""Prompt ids looked for per task (the balancer's default allows 3 attempts)."""


@dataclass(frozen=True)
class Round:
    case: str
    number: int
    task_id: str
    victim: str
    moved_to: str
    reason: str  # why the balancer ended the lost attempt
    snapshot_lag_ms: float  # from the victim's last stats read to the kill
    taken_back_s: float
    placed_s: float
    running_s: float
    seen_s: float  # when polling the balancer first showed it running elsewhere
    attempts: int
    back_s: float | None = None  # comfyui, partition: from the restart until the node is ready
    clear_s: float | None = None  # partition: from the restart until its ComfyUI holds none


@dataclass
class Ledger:
    """What killed ComfyUIs had run (their last snapshot): executions and successful ends per
    prompt id."""

    executions: Counter[str] = field(default_factory=Counter)
    finished: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Totals:
    tasks: int
    lost: int
    extra_executions: int
    cut_short: int
    to_the_end: int
    duplicated_completions: int


@dataclass(frozen=True)
class Settings:
    batch: int
    steps: int
    step_time_s: float
    health_interval_s: float
    sweep_interval_s: float
    comfyui_down_grace_s: float

    @property
    def ttl_s(self) -> int:
        return max(2, round(self.health_interval_s * 3))  # as comfy-service computes it

    @property
    def service_args(self) -> list[str]:
        return ["--health-interval-s", f"{self.health_interval_s:g}"]

    @property
    def balancer_args(self) -> list[str]:
        return [
            "--sweep-interval-s", f"{self.sweep_interval_s:g}",
            "--comfyui-down-grace-s", f"{self.comfyui_down_grace_s:g}",
        ]  # fmt: skip

    def target_s(self, case: str) -> float:
        if case == "comfyui":
            return self.comfyui_down_grace_s + self.health_interval_s + 1.0
        return self.ttl_s + 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated, of " + "/".join(CASES)
    )
    parser.add_argument("--rounds", type=int, default=3, help="kills per case")
    parser.add_argument("--batch", type=int, default=NODES - 1, help="tasks per round")
    parser.add_argument("--steps", type=int, default=30, help="KSampler steps per task")
    parser.add_argument("--step-time", type=float, default=0.1, help="seconds per step")
    parser.add_argument("--health-interval", type=float, default=0.5, help="service health s")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="balancer sweep s")
    parser.add_argument(
        "--comfyui-down-grace", type=float, default=10.0, help="balancer's ComfyUI grace s"
    )
    args = parser.parse_args()
    cases = [case for case in args.cases.split(",") if case]
    if unknown := set(cases) - set(CASES):
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    settings = Settings(
        batch=args.batch,
        steps=args.steps,
        step_time_s=args.step_time,
        health_interval_s=args.health_interval,
        sweep_interval_s=args.sweep_interval,
        comfyui_down_grace_s=args.comfyui_down_grace,
    )
    _run(cases, args.rounds, settings)


def _run(cases: list[str], rounds_per_case: int, settings: Settings) -> None:
    ledger = Ledger()
    rounds: list[Round] = []
    task_ids: dict[str, list[str]] = {case: [] for case in cases}
    with (
        local_cluster(
            NODES,
            step_time_s=settings.step_time_s,
            service_args=settings.service_args,
            balancer_args=settings.balancer_args,
        ) as cluster,
        httpx.Client(timeout=30, headers=AUTH_HEADERS) as http,
    ):
        for case in cases:
            for number in range(1, rounds_per_case + 1):
                ids = _submit(http, cluster.balancer.url, case, number, settings)
                task_ids[case] += ids
                one_round = Kill(http, cluster, ledger, settings, case, number, ids)
                rounds.append(one_round.run())
        all_ids = [task_id for ids in task_ids.values() for task_id in ids]
        records = {task_id: _record(http, cluster.balancer.url, task_id) for task_id in all_ids}
        runs = _live_runs(http, cluster)
        runs.executions.update(ledger.executions)
        runs.finished.update(ledger.finished)
        events = asyncio.run(_terminal_events(cluster.redis.url, all_ids))

    print(
        f"{NODES} nodes, health every {settings.health_interval_s:g} s (TTL {settings.ttl_s} s), "
        f"balancer sweep every {settings.sweep_interval_s:g} s, ComfyUI grace "
        f"{settings.comfyui_down_grace_s:g} s; {rounds_per_case} rounds per case of "
        f"{settings.batch} tasks x {settings.steps} steps x {settings.step_time_s * 1000:.0f} ms "
        f"(~{settings.steps * settings.step_time_s:.1f} s each); times from the SIGKILL\n"
    )
    totals = {case: _totals([records[t] for t in task_ids[case]], runs, events) for case in cases}
    for case in cases:
        _print_rounds([r for r in rounds if r.case == case])
        print()
    _print_totals(totals)
    for case in cases:
        print(_summary(case, [r for r in rounds if r.case == case], totals[case], settings))


def _submit(
    http: httpx.Client, balancer: str, case: str, number: int, settings: Settings
) -> list[str]:
    def submit(index: int) -> str:
        task_id = f"failover-{case}-{number}-{index}"
        seed = (CASES.index(case) * 1000 + number) * 100 + index  # distinct: no cached runs
        graph = txt2img(task_id, steps=settings.steps, seed=seed)
        response = http.post(
            f"{balancer}{API}/generate", json={"task_id": task_id, "prompt": graph}
        )
        response.raise_for_status()
        return task_id

    with ThreadPoolExecutor(max_workers=settings.batch) as pool:
        return list(pool.map(submit, range(settings.batch)))


@dataclass
class Kill:
    """One round: kill what the case says under the first task of the batch, measure how the
    task moved, bring the node back."""

    http: httpx.Client
    cluster: LocalCluster
    ledger: Ledger
    settings: Settings
    case: str
    number: int
    ids: list[str]

    def run(self) -> Round:
        balancer = self.cluster.balancer.url
        task_id = self.ids[0]
        record = _poll(self.http, balancer, task_id, _steps_done(MIN_STEPS_BEFORE_KILL), 30)
        victim = next(node for node in self.cluster.nodes if node.node_id == record["node_id"])
        snapshot_at = _remember(self.http, victim, self.ledger) if self.case != "partition" else 0
        killed_at = time.time()
        self._kill(victim)

        def elsewhere(r: dict[str, Any]) -> bool:
            return bool(r["status"] == "running" and r["node_id"] != victim.node_id)

        moved = _poll(self.http, balancer, task_id, elsewhere, 60)
        seen_s = time.time() - killed_at
        back_s, clear_s = self._bring_back(victim)
        for other in self.ids:
            _poll(self.http, balancer, other, lambda r: bool(r["status"] in TERMINAL), 120)
        lost_attempt, new_attempt = moved["attempt_log"][-2], moved["attempt_log"][-1]
        return Round(
            case=self.case,
            number=self.number,
            task_id=task_id,
            victim=victim.node_id,
            moved_to=str(moved["node_id"]),
            reason=str(lost_attempt["outcome"]),
            snapshot_lag_ms=(killed_at - snapshot_at) * 1000 if snapshot_at else 0.0,
            taken_back_s=_epoch(lost_attempt["ended_at"]) - killed_at,
            placed_s=_epoch(new_attempt["dispatched_at"]) - killed_at,
            running_s=_epoch(moved["started_at"]) - killed_at,
            seen_s=seen_s,
            attempts=int(moved["attempts"]),
            back_s=back_s,
            clear_s=clear_s,
        )

    def _kill(self, victim: Node) -> None:
        if self.case in ("node", "partition"):
            victim.service.kill()
        if self.case in ("node", "comfyui"):
            victim.emulator.kill()

    def _bring_back(self, victim: Node) -> tuple[float | None, float | None]:
        """Restore the fleet to 3 nodes; returns (back s, ComfyUI clear s) where they apply."""
        if self.case == "node":
            self.cluster.add_node(
                node_id(len(self.cluster.nodes)),
                step_time_s=self.settings.step_time_s,
                service_args=self.settings.service_args,
            )
            wait_for_ready_nodes(self.cluster.balancer.url, NODES)
            return None, None
        started = time.monotonic()
        if self.case == "comfyui":
            self.cluster.restart_emulator(victim)
        else:
            self.cluster.restart_service(victim)  # the TTL passed: the task moved
        return self._until_back(victim, started)

    def _until_back(self, victim: Node, started: float) -> tuple[float | None, float | None]:
        """Seconds from ``started`` until the balancer lists the victim ready, and (partition)
        until its ComfyUI holds no prompt of this round (withdrawn, or finished)."""
        prompts = {prompt_id_for(t, n) for t in self.ids for n in range(1, MAX_ATTEMPTS + 1)}
        back_s = clear_s = None
        deadline = started + 60
        while back_s is None or (self.case == "partition" and clear_s is None):
            if time.monotonic() > deadline:
                raise SystemExit(f"{victim.node_id} not back within 60 s")
            if back_s is None and self._ready(victim):
                back_s = time.monotonic() - started
            if clear_s is None and not self._held(victim) & prompts:
                clear_s = time.monotonic() - started
            time.sleep(POLL_S)
        return back_s, clear_s if self.case == "partition" else None

    def _ready(self, victim: Node) -> bool:
        nodes = self.http.get(f"{self.cluster.balancer.url}{API}/nodes").json()
        return any(n["node_id"] == victim.node_id and n["state"] == "ready" for n in nodes)

    def _held(self, victim: Node) -> set[str]:
        """The prompt ids the victim's ComfyUI runs or holds in its queue."""
        queue = self.http.get(f"{victim.emulator.url}/queue").json()
        return {item[1] for item in queue["queue_running"] + queue["queue_pending"]}


def _steps_done(count: int) -> Callable[[dict[str, Any]], bool]:
    def done(record: dict[str, Any]) -> bool:
        progress = record.get("progress") or {}
        return bool(record["status"] == "running" and progress.get("value", 0) >= count)

    return done


def _remember(http: httpx.Client, victim: Node, ledger: Ledger) -> float:
    """Keep what the victim's ComfyUI ran (it is gone after the kill); returns when read."""
    history: dict[str, Any] = http.get(f"{victim.emulator.url}/history").json()
    stats = http.get(f"{victim.emulator.url}/emulator/stats").json()
    read_at = time.time()
    ledger.executions.update({p: int(n) for p, n in stats["executions"].items()})
    ledger.finished.update(_succeeded(history))
    return read_at


def _succeeded(history: dict[str, Any]) -> list[str]:
    return [
        prompt_id
        for prompt_id, entry in history.items()
        if entry.get("status", {}).get("status_str") == "success"
    ]


def _live_runs(http: httpx.Client, cluster: LocalCluster) -> Ledger:
    runs = Ledger()
    for node in cluster.nodes:
        if node.emulator.process.is_running():
            stats = http.get(f"{node.emulator.url}/emulator/stats").json()
            runs.executions.update({p: int(n) for p, n in stats["executions"].items()})
            runs.finished.update(_succeeded(http.get(f"{node.emulator.url}/history").json()))
    return runs


def _totals(tasks: list[dict[str, Any]], runs: Ledger, events: dict[str, int]) -> Totals:
    extra = cut_short = to_the_end = 0
    for task in tasks:
        prompts = [prompt_id_for(task["id"], n) for n in range(1, MAX_ATTEMPTS + 1)]
        executions = sum(runs.executions[p] for p in prompts)
        finished = sum(runs.finished[p] for p in prompts)
        extra += max(0, executions - 1)
        cut_short += max(0, executions - finished)
        to_the_end += max(0, finished - 1)
    return Totals(
        tasks=len(tasks),
        lost=sum(task["status"] != "succeeded" for task in tasks),
        extra_executions=extra,
        cut_short=cut_short,
        to_the_end=to_the_end,
        duplicated_completions=sum(
            duplicated_completions(task, events=events[task["id"]]) for task in tasks
        ),
    )


async def _terminal_events(redis_url: str, task_ids: list[str]) -> dict[str, int]:
    redis = await connect_redis(redis_url)
    try:
        return {task_id: await terminal_events(redis, task_id) for task_id in task_ids}
    finally:
        await redis.aclose()


def _poll(
    http: httpx.Client,
    balancer: str,
    task_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = _record(http, balancer, task_id)
        if done(record):
            return record
        time.sleep(POLL_S)
    raise SystemExit(f"task {task_id} did not reach the expected state within {timeout_s:.0f} s")


def _record(http: httpx.Client, balancer: str, task_id: str) -> dict[str, Any]:
    record: dict[str, Any] = http.get(f"{balancer}{API}/tasks/{task_id}").json()
    return record


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _print_rounds(rounds: list[Round]) -> None:
    header = (
        rounds[0].case,
        "killed",
        "taken back s",
        "placed again s",
        "running again s",
        "seen by poll s",
        "back s",
        "ComfyUI clear s",
        "attempts",
        "moved to",
        "why",
    )
    rows: list[tuple[str, ...]] = [
        (
            str(r.number),
            r.victim,
            f"{r.taken_back_s:.2f}",
            f"{r.placed_s:.2f}",
            f"{r.running_s:.2f}",
            f"{r.seen_s:.2f}",
            _optional(r.back_s),
            _optional(r.clear_s),
            str(r.attempts),
            r.moved_to,
            _short(r.reason),
        )
        for r in rounds
    ]
    for name, pick in (("p50", lambda v: percentile(v, 50)), ("max", max)):
        cells = [_optional(pick(v) if v else None) for v in _phases(rounds)]
        rows.append((name, "", *cells, "", "", ""))
    print_grid(header, rows)
    lag = max(r.snapshot_lag_ms for r in rounds)
    if lag:
        print(f"(killed ComfyUIs' stats were read at most {lag:.0f} ms before their kill)")


def _optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _short(reason: str) -> str:
    if "health" in reason:
        return "health expired"
    if "ComfyUI unreachable" in reason:
        return "ComfyUI unreachable"
    return "dispatch failed" if "dispatch" in reason else reason[:30]


def _phases(rounds: list[Round]) -> list[list[float]]:
    return [
        [r.taken_back_s for r in rounds],
        [r.placed_s for r in rounds],
        [r.running_s for r in rounds],
        [r.seen_s for r in rounds],
        [r.back_s for r in rounds if r.back_s is not None],
        [r.clear_s for r in rounds if r.clear_s is not None],
    ]


def _print_totals(totals: dict[str, Totals]) -> None:
    header = (
        "case",
        "tasks",
        "lost",
        "extra executions",
        "cut short",
        "ran to the end",
        "duplicated completions",
    )
    rows = [
        (
            case,
            str(t.tasks),
            str(t.lost),
            str(t.extra_executions),
            str(t.cut_short),
            str(t.to_the_end),
            str(t.duplicated_completions),
        )
        for case, t in totals.items()
    ]
    print_grid(header, rows)


def _summary(case: str, rounds: list[Round], totals: Totals, settings: Settings) -> str:
    running = [r.running_s for r in rounds]
    target = settings.target_s(case)
    held = "met" if max(running) <= target else "NOT met"
    return (
        f"summary: {case}: failover (kill -> running on another node) p50 "
        f"{percentile(running, 50):.2f} s, max {max(running):.2f} s over {len(rounds)} kills; "
        f"target {target:.1f} s: {held}; lost {totals.lost}, extra executions "
        f"{totals.extra_executions}, duplicated completions {totals.duplicated_completions}"
    )


if __name__ == "__main__":
    main()
