"""Failover time: how long a task whose node dies waits before it runs on another node.

Starts a 3-node cluster (Redis, 3 emulated ComfyUIs, 3 comfy-services, 1 balancer, each its own
process); the services publish health every ``--health-interval`` s (0.5: health TTL
max(2, round(3 x 0.5)) = 2 s); the balancer checks for dead nodes every ``--sweep-interval`` s
(default 1, its own default; the test kit's clusters use 0.2). Each of ``--rounds`` rounds:

1. submits ``--batch`` long txt2img tasks (default 2, one fewer than the nodes, so a node is
   idle and the time measured is failover, not waiting for a busy GPU to finish);
2. waits until the first one runs on some node X, 2 sampler steps in (killed while still
   answering its placement, the balancer would see the dispatch fail and move the task at once,
   a faster path), reads X's ``/emulator/stats`` and ``/history`` (its last-known executions),
   then SIGKILLs X's service and its emulator;
3. polls the balancer until that task is ``running`` on another node; the phases come from the
   task's own record: taken back (the attempt's ``ended_at``: the balancer saw X's health key
   expire), placed again (the new attempt's ``dispatched_at``) and running (``started_at``);
4. starts a fresh node under a new id, so the fleet stays at 3, and waits for the round's tasks.

At the end: lost = tasks not succeeded; duplicated = executions (``/emulator/stats``, summed
over the live emulators and the killed ones' last snapshots) beyond one per task plus one per
execution that a kill interrupted. Target: failover within health TTL + 1 s.

    ./dev bench failover [--rounds 5] [--batch 2] [--steps 30] [--step-time 0.1]
        [--health-interval 0.5] [--sweep-interval 1]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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

from comfy_testkit.graphs import txt2img

NODES = 3
POLL_S = 0.02
MIN_STEPS_BEFORE_KILL = 2


@dataclass(frozen=True)
class Round:
    number: int
    task_id: str
    victim: str
    moved_to: str
    reason: str  # why the balancer ended the lost attempt
    new_node: str
    snapshot_lag_ms: float  # from the victim's last stats read to the kill
    taken_back_s: float
    placed_s: float
    running_s: float
    seen_s: float  # when polling the balancer first showed it running elsewhere
    attempts: int


@dataclass
class Ledger:
    """Executions seen on killed emulators (their last snapshot) and those a kill cut short."""

    executions: Counter[str]
    interrupted: Counter[str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="kills")
    parser.add_argument("--batch", type=int, default=NODES - 1, help="tasks per round")
    parser.add_argument("--steps", type=int, default=30, help="KSampler steps per task")
    parser.add_argument("--step-time", type=float, default=0.1, help="seconds per step")
    parser.add_argument("--health-interval", type=float, default=0.5, help="service health s")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="balancer sweep s")
    args = parser.parse_args()

    ttl_s = max(2, round(args.health_interval * 3))  # as comfy-service computes it
    service_args = ["--health-interval-s", f"{args.health_interval:g}"]
    balancer_args = ["--sweep-interval-s", f"{args.sweep_interval:g}"]
    ledger = Ledger(Counter(), Counter())
    rounds: list[Round] = []
    with (
        local_cluster(
            NODES,
            step_time_s=args.step_time,
            service_args=service_args,
            balancer_args=balancer_args,
        ) as cluster,
        httpx.Client(timeout=30) as http,
    ):
        task_ids: list[str] = []
        for number in range(1, args.rounds + 1):
            ids = _submit(http, cluster.balancer.url, number, args.batch, args.steps)
            task_ids += ids
            new_id = node_id(NODES + number - 1)
            rounds.append(
                _one_round(http, cluster, number, ids, ledger, new_id, args.step_time, service_args)
            )
        statuses = [_status(http, cluster.balancer.url, task_id) for task_id in task_ids]
        executions = _live_executions(http, cluster) + ledger.executions

    lost = sum(status != "succeeded" for status in statuses)
    never_ran = sum(executions[task_id] == 0 for task_id in task_ids)
    duplicated = sum(
        max(0, executions[task_id] - 1 - ledger.interrupted[task_id]) for task_id in task_ids
    )
    print(
        f"{NODES} nodes, health every {args.health_interval:g} s (TTL {ttl_s} s), balancer sweep "
        f"every {args.sweep_interval:g} s; "
        f"{args.rounds} rounds of {args.batch} tasks x {args.steps} steps x "
        f"{args.step_time * 1000:.0f} ms (~{args.steps * args.step_time:.1f} s each); "
        f"times from the SIGKILL\n"
    )
    _print_rounds(rounds)
    print()
    print_grid(
        ("tasks", "succeeded", "lost", "never ran", "re-runs after a kill", "duplicated"),
        [
            (
                str(len(task_ids)),
                str(len(task_ids) - lost),
                str(lost),
                str(never_ran),
                str(sum(ledger.interrupted.values())),
                str(duplicated),
            )
        ],
    )
    print(_summary(rounds, ttl_s, lost, duplicated))


def _submit(http: httpx.Client, balancer: str, number: int, count: int, steps: int) -> list[str]:
    def submit(index: int) -> str:
        task_id = f"failover-{number}-{index}"
        graph = txt2img(task_id, steps=steps, seed=number * 1000 + index)
        response = http.post(
            f"{balancer}{API}/generate", json={"task_id": task_id, "prompt": graph}
        )
        response.raise_for_status()
        return task_id

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(submit, range(count)))


def _one_round(
    http: httpx.Client,
    cluster: LocalCluster,
    number: int,
    ids: list[str],
    ledger: Ledger,
    new_id: str,
    step_time_s: float,
    service_args: list[str],
) -> Round:
    balancer = cluster.balancer.url
    task_id = ids[0]
    # Running and a few steps in: the node answered its placement long ago, so the kill hits a
    # node that is only computing (killed mid-answer, the balancer would see the dispatch fail
    # and move the task at once: a faster path than the one measured here).
    record = _poll(http, balancer, task_id, _steps_done(MIN_STEPS_BEFORE_KILL), 30)
    victim = next(node for node in cluster.nodes if node.node_id == record["node_id"])
    snapshot_at = _remember(http, victim, ledger)
    killed_at = time.time()
    victim.service.kill()
    victim.emulator.kill()

    def elsewhere(r: dict[str, Any]) -> bool:
        return bool(r["status"] == "running" and r["node_id"] != victim.node_id)

    moved = _poll(http, balancer, task_id, elsewhere, 60)
    seen_s = time.time() - killed_at
    lost_attempt, new_attempt = moved["attempt_log"][-2], moved["attempt_log"][-1]

    cluster.add_node(new_id, step_time_s=step_time_s, service_args=service_args)
    wait_for_ready_nodes(balancer, NODES)
    for other in ids:
        _poll(http, balancer, other, lambda r: bool(r["status"] in TERMINAL), 120)
    return Round(
        number=number,
        task_id=task_id,
        victim=victim.node_id,
        moved_to=str(moved["node_id"]),
        reason=str(lost_attempt["outcome"]),
        new_node=new_id,
        snapshot_lag_ms=(killed_at - snapshot_at) * 1000,
        taken_back_s=_epoch(lost_attempt["ended_at"]) - killed_at,
        placed_s=_epoch(new_attempt["dispatched_at"]) - killed_at,
        running_s=_epoch(moved["started_at"]) - killed_at,
        seen_s=seen_s,
        attempts=int(moved["attempts"]),
    )


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
    finished = {
        prompt_id
        for prompt_id, entry in history.items()
        if any(event == "execution_success" for event, _ in entry["status"]["messages"])
    }
    for prompt_id, times in stats["executions"].items():
        ledger.executions[prompt_id] += int(times)
        if prompt_id not in finished:
            ledger.interrupted[prompt_id] += 1  # running when killed: it must run again
    return read_at


def _poll(
    http: httpx.Client,
    balancer: str,
    task_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record: dict[str, Any] = http.get(f"{balancer}{API}/tasks/{task_id}").json()
        if done(record):
            return record
        time.sleep(POLL_S)
    raise SystemExit(f"task {task_id} did not reach the expected state within {timeout_s:.0f} s")


def _status(http: httpx.Client, balancer: str, task_id: str) -> str:
    return str(http.get(f"{balancer}{API}/tasks/{task_id}").json()["status"])


def _live_executions(http: httpx.Client, cluster: LocalCluster) -> Counter[str]:
    counts: Counter[str] = Counter()
    for node in cluster.nodes:
        if node.emulator.process.is_running():
            stats = http.get(f"{node.emulator.url}/emulator/stats").json()
            counts.update({prompt_id: int(n) for prompt_id, n in stats["executions"].items()})
    return counts


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _print_rounds(rounds: list[Round]) -> None:
    header = (
        "round",
        "killed",
        "taken back s",
        "placed again s",
        "running again s",
        "seen by poll s",
        "attempts",
        "moved to",
        "why",
        "replaced by",
    )
    rows: list[tuple[str, ...]] = [
        (
            str(r.number),
            r.victim,
            f"{r.taken_back_s:.2f}",
            f"{r.placed_s:.2f}",
            f"{r.running_s:.2f}",
            f"{r.seen_s:.2f}",
            str(r.attempts),
            r.moved_to,
            _short(r.reason),
            r.new_node,
        )
        for r in rounds
    ]
    rows.append(("p50", "", *(f"{percentile(v, 50):.2f}" for v in _phases(rounds)), "", "", "", ""))
    rows.append(("max", "", *(f"{max(v):.2f}" for v in _phases(rounds)), "", "", "", ""))
    print_grid(header, rows)
    lag = max(r.snapshot_lag_ms for r in rounds)
    print(f"(killed emulators' stats were read at most {lag:.0f} ms before their kill)")


def _short(reason: str) -> str:
    if "health" in reason:
        return "health expired"
    return "dispatch failed" if "dispatch" in reason else reason[:30]


def _phases(rounds: list[Round]) -> list[list[float]]:
    return [
        [r.taken_back_s for r in rounds],
        [r.placed_s for r in rounds],
        [r.running_s for r in rounds],
        [r.seen_s for r in rounds],
    ]


def _summary(rounds: list[Round], ttl_s: int, lost: int, duplicated: int) -> str:
    running = [r.running_s for r in rounds]
    target = ttl_s + 1.0
    held = "met" if max(running) <= target else "NOT met"
    return (
        f"summary: failover (kill -> running on another node) p50 {percentile(running, 50):.2f} s, "
        f"max {max(running):.2f} s over {len(rounds)} kills; target health TTL + 1 s = "
        f"{target:.0f} s: {held}; lost {lost}, duplicated {duplicated}"
    )


if __name__ == "__main__":
    main()
