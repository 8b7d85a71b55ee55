"""Redis Sentinel: the primary is SIGKILLed under load, the sentinels promote its replica,
and every process follows.

The test starts a primary, its replica and three sentinels (one-second down-after), two nodes
(an emulated ComfyUI and a comfy-service each), a balancer and an API-only balancer replica
(``--no-dispatch``), every one a process, all given only the sentinels. The balancers
acknowledge a submit once the replica holds it (``--submit-replicas 1``). A client submits
a task every ``SUBMIT_INTERVAL_S`` throughout, to each balancer in turn;
once the nodes are well into the work, the primary is killed. Then:

- the sentinels name the replica; the new primary has no replica, so submits are refused
  503 ``not_replicated`` until the old primary, started again as its replica, is in sync;
  then the balancer acknowledges submits again;
- every node publishes its health to the new primary, every loop of every process works
  again (``/readyz`` 200), and the log sinks write the timeline of a task submitted after;
- every acknowledged (202) task ends, succeeded, exactly once: none is lost, none completed
  twice (record, event stream, services' output), none ran twice in the emulators.

Submits answered otherwise during the failover (503, or a connection cut) were never
acknowledged; they are counted and printed (``pytest -s``) with the failover's timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from comfy_shared.models import NodeHealth
from comfy_shared.redis_client import connect_redis
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs
from comfy_testkit.api import TERMINAL, find_task
from comfy_testkit.audit import duplicated_completions, finished_lines, terminal_events
from comfy_testkit.cluster import Cluster
from comfy_testkit.plugin import CLIENT_LIMITS, BalancerFactory
from comfy_testkit.sentinel import MASTER_NAME, SentinelGroup
from comfy_testkit.stack import AUTH_HEADERS
from comfy_testkit.waiting import ConditionTimeout, wait_for_condition

pytestmark = pytest.mark.timeout(180)

NODES = ("a", "b")
STEPS = 10
STEP_TIME_S = 0.02
SUBMIT_INTERVAL_S = 0.1
MAX_SUBMITS = 300
"""Bounds the load should the test stall; it stops the submitter well before."""
BEFORE_KILL = 8
"""Tasks succeeded before the primary is killed: the nodes are busy, more work waits."""
AFTER_PROMOTION = 10
"""Tasks acknowledged after the promotion before the load stops."""
SETTLE_TIMEOUT_S = 60.0


@pytest.fixture
def redis_url() -> str:
    """The URL every process is given besides the sentinels: only its database counts (the
    sentinels name the host), so it names a host that does not exist."""
    return "redis://named-by-the-sentinels/0"


@dataclass
class Submitter:
    """Submits a task every interval until stopped; keeps what each submit was answered."""

    apis: list[httpx.AsyncClient]
    """Balancer replicas, taking submits in turn."""
    acknowledged: list[tuple[str, float]] = field(default_factory=list)
    """Task id and when its 202 arrived (monotonic)."""
    refused: list[str] = field(default_factory=list)
    """How each other answer went (a status and code, or a transport error's type)."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        for index in range(MAX_SUBMITS):
            if self.stop.is_set():
                return
            await self.submit_one(self.apis[index % len(self.apis)], f"failover-{index}", index)
            await asyncio.sleep(SUBMIT_INTERVAL_S)

    async def submit_one(self, api: httpx.AsyncClient, task_id: str, seed: int) -> None:
        body = {"prompt": graphs.txt2img(task_id, steps=STEPS, seed=seed), "task_id": task_id}
        try:
            response = await api.post("/api/v1/generate", json=body)
        except httpx.TransportError as exc:
            self.refused.append(type(exc).__name__)
            return
        if response.status_code == 202:
            self.acknowledged.append((task_id, time.monotonic()))
        else:
            self.refused.append(f"{response.status_code} {response.json().get('code')}")

    async def acknowledged_since(self, moment: float, count: int) -> bool:
        return sum(at > moment for _, at in self.acknowledged) >= count


async def test_every_process_follows_a_promoted_replica_and_no_acknowledged_task_is_lost(
    sentinel_group: SentinelGroup,
    make_cluster: Callable[..., Cluster],
    start_balancer: BalancerFactory,
) -> None:
    follow = ["--redis-sentinels", sentinel_group.sentinels_arg]
    follow += ["--redis-sentinel-master", MASTER_NAME]
    accepting = [*follow, "--submit-replicas", "1"]
    cluster = make_cluster(
        NODES,
        step_time_s=STEP_TIME_S,
        service_args=follow,
        balancer_args=[*accepting, "--comfyui-down-grace-s", "3"],
    )
    api_only = start_balancer("api-replica", extra_args=[*accepting, "--no-dispatch"])
    await cluster.nodes_ready(len(NODES))
    async with httpx.AsyncClient(
        base_url=api_only.url, headers=AUTH_HEADERS, timeout=15, limits=CLIENT_LIMITS
    ) as second:
        submitter = Submitter([cluster.api, second])
        outcome = await run_through_a_failover(cluster, sentinel_group, submitter, [api_only.url])
    assert outcome.acknowledged == outcome.succeeded, outcome
    assert (outcome.lost, outcome.failed) == (0, 0), outcome
    assert (outcome.duplicated_completions, outcome.duplicated_executions) == (0, 0), outcome


async def run_through_a_failover(
    cluster: Cluster, sentinel_group: SentinelGroup, submitter: Submitter, more: list[str]
) -> Outcome:
    """Kill the primary under the submitter's load, wait until everything works again, and
    audit the acknowledged tasks. ``more``: URLs of processes besides the cluster's that must
    be ready again."""
    load = asyncio.create_task(submitter.run(), name="load")
    try:
        await wait_for_condition(
            lambda: succeeded_at_least(cluster, submitter, BEFORE_KILL),
            timeout_s=30,
            what=f"{BEFORE_KILL} tasks done",
        )
        sentinel_group.primary.process.kill()
        killed_at = time.monotonic()
        await wait_for_condition(
            lambda: promoted(sentinel_group), timeout_s=30, interval_s=0.1, what="promotion"
        )
        promoted_s = time.monotonic() - killed_at
        # The new primary has no replica: submits are refused (not_replicated) until the old
        # primary is back as one, as an operator (or its container's restart) brings it.
        await asyncio.to_thread(sentinel_group.bring_back_the_old_primary)
        rejoined_s = time.monotonic() - killed_at
        await wait_for_condition(
            lambda: submitter.acknowledged_since(killed_at, AFTER_PROMOTION),
            timeout_s=30,
            what="submits acknowledged after the promotion",
        )
        first_after_s = min(at for _, at in submitter.acknowledged if at > killed_at) - killed_at
    finally:
        submitter.stop.set()
        await load
    await wait_for_condition(
        lambda: health_published_since(sentinel_group, time.time() - 1),
        timeout_s=10,
        what="every node's health on the new primary",
    )
    await wait_for_condition(
        lambda: all_ready(cluster, more), timeout_s=15, what="every /readyz 200"
    )
    ready_s = time.monotonic() - killed_at

    outcome = await settle_and_audit(cluster, sentinel_group, submitter)
    last = submitter.acknowledged[-1][0]
    await wait_for_condition(
        lambda: logged_by_both(cluster, last), timeout_s=10, what=f"{last}'s timeline"
    )
    print(
        f"redis failover: {outcome}; promoted {promoted_s:.2f} s after the kill, the old "
        f"primary its replica at {rejoined_s:.2f} s, the first submit acknowledged after the "
        f"kill at {first_after_s:.2f} s, every process ready at {ready_s:.2f} s; "
        f"{len(submitter.refused)} submits refused meanwhile "
        f"({', '.join(sorted(set(submitter.refused)))})"
    )
    return outcome


async def succeeded_at_least(cluster: Cluster, submitter: Submitter, count: int) -> bool:
    done = 0
    for task_id, _ in list(submitter.acknowledged):
        task = await find_task(cluster.api, task_id)
        done += task is not None and task["status"] == "succeeded"
    return done >= count


async def promoted(group: SentinelGroup) -> bool:
    try:
        return group.primary_address() == (group.replica.host, group.replica.port)
    except ConnectionError:  # none named while the sentinels fail over
        return False


async def health_published_since(group: SentinelGroup, epoch_s: float) -> bool:
    redis = await connect_redis(group.target())
    try:
        keys = RedisKeys()
        documents = [await redis.get(keys.node_health(node_id)) for node_id in NODES]
    finally:
        await redis.aclose()
    return all(
        document is not None
        and NodeHealth.model_validate_json(document).updated_at.timestamp() > epoch_s
        for document in documents
    )


async def logged_by_both(cluster: Cluster, task_id: str) -> bool:
    """The task's timeline (written by each process's log sink) has the balancer's lines and
    its node's."""
    response = await cluster.api.get(f"/api/v1/tasks/{task_id}/logs", params={"format": "json"})
    return {"balancer", "service"} <= {line["service"] for line in response.json()}


async def all_ready(cluster: Cluster, more: list[str]) -> bool:
    urls = [cluster.balancer.url, *more, *(node.service.url for node in cluster.nodes)]
    async with httpx.AsyncClient(timeout=5) as client:
        for url in urls:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    continue
            return False
    return True


@dataclass
class Outcome:
    acknowledged: int
    succeeded: int
    failed: int
    lost: int
    """Acknowledged, then gone from Redis or not ended a minute after the load stopped."""
    duplicated_completions: int
    duplicated_executions: int

    def __str__(self) -> str:
        return (
            f"{self.acknowledged} tasks acknowledged, {self.succeeded} succeeded, "
            f"{self.failed} failed, {self.lost} lost, {self.duplicated_completions} "
            f"duplicated completions, {self.duplicated_executions} duplicated executions"
        )


async def settle_and_audit(cluster: Cluster, group: SentinelGroup, submitter: Submitter) -> Outcome:
    ids = [task_id for task_id, _ in submitter.acknowledged]

    async def states() -> list[dict[str, Any] | None]:
        return list(await asyncio.gather(*(find_task(cluster.api, task_id) for task_id in ids)))

    async def all_ended() -> bool:
        return all(task is not None and task["status"] in TERMINAL for task in await states())

    with contextlib.suppress(ConditionTimeout):
        await wait_for_condition(all_ended, timeout_s=SETTLE_TIMEOUT_S, what="every task ended")
    tasks = [task for task in await states() if task is not None and task["status"] in TERMINAL]
    executions = await cluster.executions(ids)
    outputs = [node.service.process.output() for node in cluster.nodes]
    redis = await connect_redis(group.target())
    try:
        events = {task["id"]: await terminal_events(redis, task["id"]) for task in tasks}
    finally:
        await redis.aclose()
    completions = [
        duplicated_completions(
            task, events=events[task["id"]], lines=finished_lines(outputs, task["id"])
        )
        for task in tasks
    ]
    return Outcome(
        acknowledged=len(ids),
        succeeded=sum(task["status"] == "succeeded" for task in tasks),
        failed=sum(task["status"] != "succeeded" for task in tasks),
        lost=len(ids) - len(tasks),
        duplicated_completions=sum(completions),
        duplicated_executions=sum(max(0, executions[task_id] - 1) for task_id in ids),
    )
