"""No task lost, none run twice: a balancer killed under load, and two balancer replicas."""

import asyncio
import uuid
from collections.abc import Callable

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.stack import AUTH_HEADERS


async def submit_batch(api: httpx.AsyncClient, count: int) -> list[str]:
    graph = graphs.txt2img
    return [
        (await submit(api, graph(f"x-{uuid.uuid4().hex[:8]}", steps=15)))["id"]
        for _ in range(count)
    ]


async def test_a_balancer_killed_under_load_loses_nothing_and_runs_nothing_twice(
    make_cluster: Callable[..., Cluster], start_balancer: BalancerFactory
) -> None:
    cluster = make_cluster()
    ids = await submit_batch(cluster.api, 20)

    cluster.balancer.kill()  # SIGKILL while it places the batch
    replacement = start_balancer("balancer-2")
    async with httpx.AsyncClient(base_url=replacement.url, timeout=15, headers=AUTH_HEADERS) as api:
        finished = [await wait_until_finished(api, task_id, timeout_s=60) for task_id in ids]

    assert {task["status"] for task in finished} == {"succeeded"}
    counts = await cluster.executions(ids)
    assert [counts[task_id] for task_id in ids] == [1] * len(ids)


async def test_two_replicas_on_one_redis_dispatch_each_task_once(
    make_cluster: Callable[..., Cluster], start_balancer: BalancerFactory
) -> None:
    cluster = make_cluster(["a", "b", "c"])
    second = start_balancer("balancer-2")
    async with httpx.AsyncClient(base_url=second.url, timeout=15, headers=AUTH_HEADERS) as other:
        first_half, second_half = await asyncio.gather(
            submit_batch(cluster.api, 15), submit_batch(other, 15)
        )
        ids = first_half + second_half
        finished = [await wait_until_finished(other, task_id, timeout_s=60) for task_id in ids]

    assert {task["status"] for task in finished} == {"succeeded"}
    assert {task["attempts"] for task in finished} == {1}
    counts = await cluster.executions(ids)
    assert [counts[task_id] for task_id in ids] == [1] * len(ids)
    placements = sum(
        component.process.output().count("task dispatched")
        for component in (cluster.balancer, second)
    )
    assert placements == len(ids)  # each task placed once, by exactly one of the replicas


async def test_an_api_only_replica_accepts_and_the_placing_replica_runs_the_tasks(
    make_cluster: Callable[..., Cluster], start_balancer: BalancerFactory
) -> None:
    cluster = make_cluster(["a"], balancer_args=["--no-dispatch"])
    async with httpx.AsyncClient(
        base_url=cluster.balancer.url, timeout=15, headers=AUTH_HEADERS
    ) as api:
        ids = await submit_batch(api, 3)
        await asyncio.sleep(1.5)  # over a sweep interval: a placing replica would have acted
        waiting = [(await api.get(f"/api/v1/tasks/{task_id}")).json() for task_id in ids]
        assert [task["status"] for task in waiting] == ["queued"] * 3
        assert [task["queue_position"] for task in waiting] == [0, 1, 2]

        placing = start_balancer("balancer-placing")
        finished = [await wait_until_finished(api, task_id, timeout_s=60) for task_id in ids]

    assert {task["status"] for task in finished} == {"succeeded"}
    api_only = cluster.balancer.process.output()
    assert "this replica only serves the API" in api_only
    assert "task dispatched" not in api_only
    assert placing.process.output().count("task dispatched") == 3
