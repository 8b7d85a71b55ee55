"""The autoscaler's loop against real Redis, a real balancer and real nodes: its "containers"
are processes here (an emulator and a comfy-service per node, started and stopped by
:class:`ProcessNodes`), so the whole read-decide-act cycle runs without a Docker engine.
The Docker side is tested against a real engine in ``test_containers.py``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from comfy_balancer.autoscaler.containers import NodeContainer
from comfy_balancer.autoscaler.policy import Decision, Verb
from comfy_balancer.autoscaler.scaler import Autoscaler
from comfy_balancer.autoscaler.settings import AutoscalerSettings
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.plugin import BalancerFactory, EmulatorFactory, ServiceFactory
from comfy_testkit.stack import AUTH_HEADERS, RunningComponent
from comfy_testkit.waiting import wait_for_condition

pytestmark = pytest.mark.timeout(120)


class ProcessNodes:
    """Nodes as processes (emulator + comfy-service) instead of containers."""

    def __init__(self, start_emulator: EmulatorFactory, start_service: ServiceFactory) -> None:
        self._start_emulator = start_emulator
        self._start_service = start_service
        self.running: dict[str, tuple[str, datetime, list[RunningComponent]]] = {}
        self.calls: list[tuple[str, str]] = []

    def nodes(self) -> list[NodeContainer]:
        return [
            NodeContainer(node_id, gpu, all(p.process.is_running() for p in parts), at, ())
            for node_id, (gpu, at, parts) in sorted(self.running.items())
        ]

    def start(self, node_id: str, gpu: str) -> None:
        self.calls.append(("start", node_id))
        emulator = self._start_emulator(f"emulator-{node_id}-{uuid.uuid4().hex[:4]}")
        service = self._start_service(emulator.url, node_id=node_id)
        self.running[node_id] = (gpu, datetime.now(UTC), [service, emulator])

    def remove(self, node_id: str) -> None:
        self.calls.append(("remove", node_id))
        for part in self.running.pop(node_id)[2]:
            part.stop()


@pytest.fixture
def nodes(start_emulator: EmulatorFactory, start_service: ServiceFactory) -> ProcessNodes:
    return ProcessNodes(start_emulator, start_service)


@pytest.fixture
async def api(start_balancer: BalancerFactory) -> Any:
    # least-loaded: a new node gets work at once (earliest-finish would keep the tasks for
    # the node that has their model loaded, as long as that looks sooner)
    balancer = start_balancer(extra_args=["--strategy", "least-loaded"])
    async with httpx.AsyncClient(base_url=balancer.url, timeout=15, headers=AUTH_HEADERS) as api:
        yield api


def make_settings(redis_url: str, **changes: Any) -> AutoscalerSettings:
    fields: dict[str, Any] = {
        "redis_url": redis_url,
        "gpus": ["0", "1"],
        "min_nodes": 1,
        "max_nodes": 2,
        "target_wait_s": 1.0,
        "idle_s": 0.5,
        "up_cooldown_s": 0,
        "down_cooldown_s": 0,
        "boot_timeout_s": 60,
        "scope": f"t{uuid.uuid4().hex[:8]}",
        "node_prefix": f"n{uuid.uuid4().hex[:4]}-",
        **changes,
    }
    return AutoscalerSettings(**fields)


async def decide_until(
    autoscaler: Autoscaler, wanted: Callable[[Decision], bool], what: str, timeout_s: float = 30
) -> Decision:
    async def decided() -> Decision | None:
        decision = await autoscaler.autoscale_once()
        return decision if wanted(decision) else None

    return await wait_for_condition(decided, timeout_s=timeout_s, interval_s=0.2, what=what)


def acts(verb: Verb) -> Callable[[Decision], bool]:
    return lambda decision: any(action.verb is verb for action in decision.actions)


async def node_state(api: httpx.AsyncClient, node_id: str) -> str | None:
    for node in (await api.get("/api/v1/nodes")).json():
        if node["node_id"] == node_id:
            return str(node["state"])
    return None


async def wait_node_state(api: httpx.AsyncClient, node_id: str, state: str) -> None:
    async def reached() -> bool:
        return await node_state(api, node_id) == state

    await wait_for_condition(reached, timeout_s=30, what=f"{node_id} {state}")


async def test_from_one_node_to_two_under_load_and_back_to_one_nothing_lost(
    api: httpx.AsyncClient, nodes: ProcessNodes, redis: Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url)
    first, second = (settings.limits.node_id_for(gpu) for gpu in ("0", "1"))
    autoscaler = Autoscaler(settings, redis, nodes)

    started = await autoscaler.autoscale_once()
    assert [(a.verb, a.node_id) for a in started.actions] == [(Verb.START, first)]
    await wait_node_state(api, first, "ready")
    assert (await autoscaler.autoscale_once()).actions == ()  # at its minimum, queue empty

    prefix = uuid.uuid4().hex[:8]
    load = [
        (await submit(api, graphs.txt2img(f"{prefix}-{i}", steps=200, seed=i)))["id"]
        for i in range(12)
    ]
    up = await decide_until(autoscaler, acts(Verb.START), "a scale-up under load")
    assert [(a.verb, a.node_id) for a in up.actions] == [(Verb.START, second)]
    assert "over target 1 s" in up.reason

    tasks = await asyncio.gather(*(wait_until_finished(api, t, timeout_s=60) for t in load))
    assert {(task["status"], task["attempts"]) for task in tasks} == {("succeeded", 1)}
    assert {task["node_id"] for task in tasks} == {first, second}

    down = await decide_until(autoscaler, acts(Verb.DRAIN), "a drain once idle")
    (drained,) = [a.node_id for a in down.actions]
    assert "idle" in down.reason
    removed = await decide_until(autoscaler, acts(Verb.REMOVE), "the drained node removed")
    assert [(a.verb, a.node_id, a.reason) for a in removed.actions] == [
        (Verb.REMOVE, drained, "drained and idle")
    ]
    assert len(nodes.nodes()) == 1
    assert await node_state(api, drained) == "dead"
    keys = RedisKeys(settings.redis_prefix)
    assert not await redis.sismember(keys.drained_nodes(), drained)  # a new node there works
    assert not await redis.exists(keys.autoscaler_retiring(settings.scope))
    assert (await autoscaler.autoscale_once()).actions == ()  # at the minimum again


async def test_a_restarted_autoscaler_finds_its_nodes_and_finishes_retiring_them(
    api: httpx.AsyncClient, nodes: ProcessNodes, redis: Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url, min_nodes=2)
    before = Autoscaler(settings, redis, nodes)
    await before.autoscale_once()
    for node in nodes.nodes():
        await wait_node_state(api, node.node_id, "ready")
    calm = settings.model_copy(update={"min_nodes": 1})
    drain = await decide_until(Autoscaler(calm, redis, nodes), acts(Verb.DRAIN), "a drain")
    (retired,) = [action.node_id for action in drain.actions]

    after = Autoscaler(calm, redis, nodes)  # a new process: nothing in memory
    removed = await decide_until(after, acts(Verb.REMOVE), "the retired node removed")

    assert [a.node_id for a in removed.actions] == [retired]
    assert [verb for verb, _ in nodes.calls] == ["start", "start", "remove"]


async def test_a_node_an_admin_drained_is_neither_undrained_nor_removed(
    api: httpx.AsyncClient, nodes: ProcessNodes, redis: Redis, redis_url: str
) -> None:
    settings = make_settings(redis_url, max_nodes=1, gpus=["0"])
    autoscaler = Autoscaler(settings, redis, nodes)
    await autoscaler.autoscale_once()
    (node,) = nodes.nodes()
    await wait_node_state(api, node.node_id, "ready")
    assert (await api.post(f"/api/v1/nodes/{node.node_id}/drain")).status_code == 200
    await submit(api, graphs.txt2img(f"{uuid.uuid4().hex[:8]}", steps=10))
    await wait_node_state(api, node.node_id, "drained")

    decision = await autoscaler.autoscale_once()

    assert decision.actions == ()
    assert "at max 1 node(s)" in decision.reason
    assert await node_state(api, node.node_id) == "drained"
