"""Chaos: one fault at a time, injected into a real cluster under load, and the promises that
must hold through it.

Each test starts its own Redis (an append-only file synced before every reply, so not even a
SIGKILL loses a write Redis acknowledged), three nodes (an emulated ComfyUI and a
comfy-service each, every one a process) and a balancer, queues a batch of small txt2img tasks
(distinct seeds, so ComfyUI cannot serve one from its cache) and, while they run:

a. SIGTERMs Redis, and starts it again on the same port and folder;
b. SIGKILLs Redis, and starts it again (after a longer outage);
c. SIGKILLs a node's ComfyUI behind its live service, and starts it again on the same port
   once the balancer moved its tasks (the service must reconnect by itself);
d. SIGKILLs a service while its ComfyUI runs on, and starts it again after more than its
   health TTL (the partition case): that ComfyUI finishes one prompt of an attempt that moved,
   has the next one hung and a third queued.

Then every test checks that every task succeeded, none was lost, none was completed twice (its
record, its event stream and the services' output each show one completion, by its last
attempt) and that a task submitted right after recovery is placed within 5 s; with Redis down,
also that the balancer's /readyz answers 503 naming its dispatcher loop (200 again after) and
that the tasks ComfyUI finished meanwhile are recorded within 5 s of Redis' return.
Executions that repeat (a prompt of an attempt that moved still ran) are allowed: they are
counted and printed (``pytest -s``) with the time the cluster took to recover.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from comfy_shared.comfyui import ComfyClient, HistoryEntry, QueueState
from comfy_shared.redis_client import connect_redis
from comfy_testkit import graphs
from comfy_testkit.api import TERMINAL, find_task, get_task, submit, wait_for_status
from comfy_testkit.audit import duplicated_completions, finished_lines, terminal_events
from comfy_testkit.cluster import Cluster, Node
from comfy_testkit.plugin import EmulatorFactory, ServiceFactory
from comfy_testkit.restartable_redis import RestartableRedis
from comfy_testkit.waiting import ConditionTimeout, wait_for_condition

pytestmark = pytest.mark.timeout(150)

NODES = ("a", "b", "c")
LOAD_TASKS = 30
STEPS = 20
STEP_TIME_S = 0.02
MID_LOAD = LOAD_TASKS // 5
"""Succeeded tasks before the fault: the nodes are busy and most of the load still waits."""
COMFYUI_DOWN_GRACE_S = 3.0
"""The balancer's --comfyui-down-grace-s in these tests (default 10 s), to keep them short."""
PLACED_WITHIN_S = 5.0
SETTLE_TIMEOUT_S = 60.0


@pytest.fixture
def redis_url(restartable_redis: RestartableRedis) -> str:
    """Every process of the test uses the Redis the test kills (overrides the testkit's)."""
    return restartable_redis.url


@dataclass
class Outcome:
    fault: str
    tasks: int
    succeeded: int
    failed: int
    lost: int
    """Gone from Redis, or not ended a minute after the fault."""
    duplicated_executions: int
    duplicated_completions: int
    placed_after_recovery_s: float
    notes: str = ""

    def __str__(self) -> str:
        return (
            f"chaos {self.fault}: {self.tasks} tasks, {self.succeeded} succeeded, "
            f"{self.failed} failed, {self.lost} lost, {self.duplicated_executions} duplicated "
            f"executions, {self.duplicated_completions} duplicated completions; a new task placed "
            f"{self.placed_after_recovery_s:.2f} s after recovery{self.notes}"
        )


# --- the load and its audit ----------------------------------------------------------------


async def start_load(cluster: Cluster, tag: str) -> list[str]:
    """Queue the batch and wait until the nodes are well into it."""
    await cluster.nodes_ready(len(cluster.nodes))
    seed = random.randrange(10**9)
    ids = []
    for index in range(LOAD_TASKS):
        task_id = f"{tag}-{index}"
        graph = graphs.txt2img(task_id, steps=STEPS, seed=seed + index)
        ids.append((await submit(cluster.api, graph, task_id=task_id))["id"])

    async def mid_load() -> bool:
        tasks = await asyncio.gather(*(get_task(cluster.api, task_id) for task_id in ids))
        succeeded: int = sum(task["status"] == "succeeded" for task in tasks)
        return succeeded >= MID_LOAD

    await wait_for_condition(mid_load, timeout_s=30, what=f"{MID_LOAD} tasks done")
    return ids


async def placed_after(cluster: Cluster, recovered_at: float, tag: str) -> tuple[str, float]:
    """Submit a task (ahead of the rest of the load) and measure how long after the recovery
    the balancer placed it."""
    graph = graphs.txt2img(f"{tag}-probe", steps=STEPS, seed=random.randrange(10**9))
    probe = await submit(cluster.api, graph, task_id=f"{tag}-probe", priority=100)
    placed = await wait_for_status(
        cluster.api, probe["id"], {"dispatched", "running", *TERMINAL}, timeout_s=30
    )
    return probe["id"], epoch(placed["attempt_log"][0]["dispatched_at"]) - recovered_at


async def settle_and_audit(
    cluster: Cluster,
    redis_url: str,
    fault: str,
    ids: list[str],
    placed_s: float,
    *,
    earlier: Counter[str] | None = None,
) -> Outcome:
    """Wait until every task ended, then count: lost, duplicated executions and completions.
    ``earlier``: prompt id -> executions that emulators killed since had counted."""

    async def states() -> list[dict[str, Any] | None]:
        return list(await asyncio.gather(*(find_task(cluster.api, task_id) for task_id in ids)))

    async def all_ended() -> list[dict[str, Any] | None] | None:
        found = await states()
        return found if all(task is None or task["status"] in TERMINAL for task in found) else None

    try:
        found = await wait_for_condition(
            all_ended, timeout_s=SETTLE_TIMEOUT_S, interval_s=0.2, what="every task ended"
        )
    except ConditionTimeout:
        found = await states()  # what has not ended by now counts as lost
    tasks = [task for task in found if task is not None and task["status"] in TERMINAL]
    executions = await cluster.executions(ids, earlier=earlier)
    outputs = [node.service.process.output() for node in cluster.nodes]
    lines = {task["id"]: finished_lines(outputs, task["id"]) for task in tasks}
    redis = await connect_redis(redis_url)
    try:
        events = {task["id"]: await terminal_events(redis, task["id"]) for task in tasks}
    finally:
        await redis.aclose()
    # Each witness must see the completion it should, or it could not see a second one.
    assert all(events.values()), events
    assert all(lines[task["id"]] for task in tasks if task["status"] == "succeeded"), lines
    completions = [
        duplicated_completions(task, events=events[task["id"]], lines=lines[task["id"]])
        for task in tasks
    ]
    return Outcome(
        fault=fault,
        tasks=len(ids),
        succeeded=sum(task["status"] == "succeeded" for task in tasks),
        failed=sum(task["status"] != "succeeded" for task in tasks),
        lost=len(ids) - len(tasks),
        duplicated_executions=sum(max(0, executions[task_id] - 1) for task_id in ids),
        duplicated_completions=sum(completions),
        placed_after_recovery_s=placed_s,
    )


def check(outcome: Outcome) -> None:
    print(outcome)
    assert (outcome.succeeded, outcome.failed, outcome.lost) == (outcome.tasks, 0, 0), outcome
    assert outcome.duplicated_completions == 0, outcome
    assert outcome.placed_after_recovery_s < PLACED_WITHIN_S, outcome


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def make(make_cluster: Callable[..., Cluster], *balancer_args: str) -> Cluster:
    return make_cluster(
        NODES,
        step_time_s=STEP_TIME_S,
        balancer_args=["--comfyui-down-grace-s", f"{COMFYUI_DOWN_GRACE_S:g}", *balancer_args],
    )


# --- a, b: Redis restarted -----------------------------------------------------------------


async def readiness(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    response = await cluster.api.get("/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def prompts_in_flight(cluster: Cluster, ids: list[str]) -> dict[str, tuple[Node, str]]:
    """Task id -> node and prompt id of the tasks in ComfyUI now."""
    in_flight = {}
    for task in await asyncio.gather(*(get_task(cluster.api, task_id) for task_id in ids)):
        prompt_id = task["attempt_log"][-1]["prompt_id"] if task["attempt_log"] else None
        if task["status"] not in TERMINAL and prompt_id:
            in_flight[task["id"]] = (cluster.node(task["node_id"]), prompt_id)
    return in_flight


async def ended_in_comfyui(in_flight: dict[str, tuple[Node, str]]) -> list[str]:
    """The tasks whose prompt ComfyUI has finished (read from ComfyUI, not from Redis)."""
    return [
        task_id
        for task_id, (node, prompt_id) in in_flight.items()
        if await history_of(node, prompt_id) is not None
    ]


@pytest.mark.parametrize(
    ("sig", "outage_s"),
    [(signal.SIGTERM, 2.0), (signal.SIGKILL, 6.0)],
    ids=["sigterm", "sigkill"],
)
async def test_redis_restarted_mid_load(
    sig: signal.Signals,
    outage_s: float,
    restartable_redis: RestartableRedis,
    make_cluster: Callable[..., Cluster],
) -> None:
    """Down for ``outage_s``: tasks end in ComfyUI meanwhile, unseen by Redis; the longer
    outage lets the balancer's dispatcher back off to its longest restart delay."""
    cluster = make(make_cluster)
    tag = f"redis-{sig.name.lower()}"
    ids = await start_load(cluster, tag)

    in_flight = await prompts_in_flight(cluster, ids)
    restartable_redis.crash(sig)
    down_at = time.monotonic()

    async def dispatcher_named() -> bool:
        status, body = await readiness(cluster)
        return status == 503 and "dispatcher" in body["loops"]

    await wait_for_condition(dispatcher_named, timeout_s=10, what="/readyz 503 naming it")
    await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
    unrecorded = await ended_in_comfyui(in_flight)
    restartable_redis.start_again()
    recovered_at, recovered_mono = time.time(), time.monotonic()

    # Tasks ComfyUI finished while Redis was down are recorded at once, not at the next
    # safety-net reconciliation: until then they hold their node's slots.

    async def recorded() -> bool:
        tasks = await asyncio.gather(*(get_task(cluster.api, task_id) for task_id in unrecorded))
        return all(task["status"] in TERMINAL for task in tasks)

    await wait_for_condition(recorded, timeout_s=PLACED_WITHIN_S, what=f"{unrecorded} recorded")
    recorded_s = time.monotonic() - recovered_mono
    probe, placed_s = await placed_after(cluster, recovered_at, tag)

    async def ready_again() -> bool:
        return (await readiness(cluster))[0] == 200

    await wait_for_condition(ready_again, timeout_s=10, what="/readyz 200 again")
    ready_s = time.monotonic() - recovered_mono
    outcome = await settle_and_audit(cluster, restartable_redis.url, tag, [*ids, probe], placed_s)
    outcome.notes = (
        f"; {len(unrecorded)} tasks ComfyUI finished during the outage recorded "
        f"{recorded_s:.2f} s after it; /readyz 200 again after {ready_s:.2f} s"
    )
    check(outcome)


# --- c, d: one node's ComfyUI or service killed ------------------------------------------


def comfy_client(node: Node) -> ComfyClient:
    return ComfyClient(node.emulator.url, timeout=5)


async def history_of(node: Node, prompt_id: str) -> HistoryEntry | None:
    async with comfy_client(node) as comfy:
        return await comfy.get_history(prompt_id)


async def queue_of(node: Node) -> QueueState:
    async with comfy_client(node) as comfy:
        return await comfy.get_queue()


async def busy_node(cluster: Cluster, pending: int) -> tuple[Node, QueueState]:
    """A node whose ComfyUI runs a prompt with ``pending`` more waiting, and its queue."""

    async def find() -> tuple[Node, QueueState] | None:
        for node in cluster.nodes:
            queue = await queue_of(node)
            if len(queue.running) == 1 and len(queue.pending) == pending:
                return node, queue
        return None

    return await wait_for_condition(find, timeout_s=20, what=f"a node with {pending} waiting")


async def wait_until_moved(cluster: Cluster, victim: Node, ids: list[str]) -> list[str]:
    """Wait until every task the victim held runs elsewhere (or ended); returns them."""
    tasks = await asyncio.gather(*(get_task(cluster.api, task_id) for task_id in ids))
    held = [
        t["id"] for t in tasks if t["node_id"] == victim.node_id and t["status"] not in TERMINAL
    ]

    async def moved() -> bool:
        now = await asyncio.gather(*(get_task(cluster.api, task_id) for task_id in held))
        return all(task["node_id"] != victim.node_id or task["status"] in TERMINAL for task in now)

    await wait_for_condition(moved, timeout_s=COMFYUI_DOWN_GRACE_S + 15, what=f"{held} moved")
    return held


async def set_speeds(nodes: list[Node], speed: float) -> None:
    await asyncio.gather(*(node.control.set_speed(speed) for node in nodes))


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_comfyui_killed_behind_its_live_service(
    restartable_redis: RestartableRedis,
    make_cluster: Callable[..., Cluster],
    start_emulator: EmulatorFactory,
) -> None:
    cluster = make(make_cluster)
    tag = "comfyui-kill"
    ids = await start_load(cluster, tag)
    victim, _ = await busy_node(cluster, pending=1)
    ran_there = Counter((await victim.control.stats())["executions"])  # dies with it

    victim.emulator.kill()
    killed = time.monotonic()
    held = await wait_until_moved(cluster, victim, ids)
    moved_s = time.monotonic() - killed
    victim.emulator = start_emulator(
        victim.emulator.name, port=port_of(victim.emulator.url), step_time_s=STEP_TIME_S
    )
    recovered_at, recovered_mono = time.time(), time.monotonic()

    probe, placed_s = await placed_after(cluster, recovered_at, tag)
    # The service found its ComfyUI again by itself: a task sent straight to it runs there.
    async with httpx.AsyncClient(
        base_url=victim.service.url, headers=victim.service.auth_headers, timeout=15
    ) as service:
        direct = await submit(service, graphs.txt2img(f"{tag}-direct", steps=STEPS))
        done = await wait_for_status(service, direct["id"], TERMINAL, timeout_s=30)
    assert done["status"] == "succeeded", done
    direct_s = time.monotonic() - recovered_mono
    outcome = await settle_and_audit(
        cluster, restartable_redis.url, tag, [*ids, probe], placed_s, earlier=ran_there
    )
    outcome.notes = (
        f"; the {len(held)} tasks it held ran elsewhere {moved_s:.2f} s after the kill; "
        f"a task sent straight to its service done {direct_s:.2f} s after ComfyUI was back"
    )
    check(outcome)


async def test_a_service_killed_while_its_comfyui_runs_on_completes_nothing_that_moved(
    restartable_redis: RestartableRedis,
    make_cluster: Callable[..., Cluster],
    start_service: ServiceFactory,
) -> None:
    # Every slot filled at once (no prefetch lead): the victim holds three prompts.
    cluster = make(make_cluster, "--slots-per-node", "3", "--prefetch-lead-s", "3600")
    tag = "partition"
    ids = await start_load(cluster, tag)
    # Every ComfyUI slows down while the faults are armed, so that no prompt ends in between
    # and the balancer, seeing equal speeds, keeps every node full.
    await set_speeds(cluster.nodes, 0.1)
    victim, _ = await busy_node(cluster, pending=2)
    # The victim's ComfyUI will finish the running prompt long after the balancer moved the
    # task, hang in the next one and hold the third in its queue.
    await victim.control.hang_next(1)

    async def roles() -> QueueState | None:
        """The queue, read while the hang is still armed: the running prompt is not it."""
        queue = await queue_of(victim)
        armed = (await victim.control.stats())["faults"]["hang_next"] == 1
        return queue if armed and (len(queue.running), len(queue.pending)) == (1, 2) else None

    queue = await wait_for_condition(roles, what="one prompt running, two waiting")
    finishing, hung, queued = queue.running[0].prompt_id, *(i.prompt_id for i in queue.pending)
    await set_speeds([node for node in cluster.nodes if node is not victim], 1.0)

    victim.service.kill()
    killed = time.monotonic()
    held = await wait_until_moved(cluster, victim, ids)
    moved_s = time.monotonic() - killed

    async def finished_there() -> bool:
        entry = await history_of(victim, finishing)
        running = (await queue_of(victim)).running
        return bool(entry and entry.succeeded and [i.prompt_id for i in running] == [hung])

    await wait_for_condition(finished_there, timeout_s=30, what="the moved prompt done there")
    await victim.control.set_speed(1.0)
    victim.service = start_service(
        victim.emulator.url, node_id=victim.node_id, port=port_of(victim.service.url)
    )
    recovered_at, recovered_mono = time.time(), time.monotonic()

    async def withdrawn() -> bool:
        return (await queue_of(victim)).queue_remaining == 0

    await wait_for_condition(withdrawn, timeout_s=PLACED_WITHIN_S, what="its prompts withdrawn")
    withdrawn_s = time.monotonic() - recovered_mono
    hung_entry = await history_of(victim, hung)
    assert hung_entry is not None
    assert not hung_entry.succeeded, hung_entry
    assert await victim.control.executions(queued) == 0
    probe, placed_s = await placed_after(cluster, recovered_at, tag)
    outcome = await settle_and_audit(cluster, restartable_redis.url, tag, [*ids, probe], placed_s)
    outcome.notes = (
        f"; the {len(held)} tasks it held moved {moved_s:.2f} s after the kill; its ComfyUI "
        f"finished 1 of them meanwhile (not recorded), the hung and the queued one were "
        f"withdrawn {withdrawn_s:.2f} s after the service was back"
    )
    check(outcome)


# --- the audit itself ----------------------------------------------------------------------


def attempt(outcome: str | None) -> dict[str, Any]:
    return {"outcome": outcome}


@pytest.mark.parametrize(
    ("status", "outcomes", "events", "lines", "duplicated"),
    [
        ("succeeded", ["the node stopped publishing health", "succeeded"], 1, 1, 0),
        ("failed", ["failed: boom"], 1, 0, 0),
        ("succeeded", ["succeeded", "succeeded"], 1, 1, 1),  # two attempts completed it
        ("succeeded", ["succeeded", None], 1, 1, 1),  # an attempt that was over completed it
        ("succeeded", ["succeeded"], 2, 1, 1),  # two terminal events
        ("succeeded", ["succeeded"], 1, 2, 1),  # two services logged its end
    ],
)
def test_the_audit_counts_every_second_completion(
    status: str, outcomes: list[str | None], events: int, lines: int, duplicated: int
) -> None:
    task = {"status": status, "attempt_log": [attempt(outcome) for outcome in outcomes]}
    assert duplicated_completions(task, events=events, lines=lines) == duplicated
