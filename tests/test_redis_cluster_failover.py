"""High availability on Redis Cluster: the primary that holds the shared slot (the queue, the
tasks) crashes, its replica takes over, and the stack carries on by itself: what was
acknowledged before is still there and new tasks run, with no process restarted."""

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from comfy_emulator.workflows import Workflow
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.redis_cluster import RedisClusterServers, start_redis_cluster
from comfy_testkit.waiting import wait_for_condition, wait_for_condition_sync

KEYS = RedisKeys(cluster=True)


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    cluster = start_redis_cluster(tmp_path / "redis-cluster", replicas=True)
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(replicated_cluster: RedisClusterServers) -> str:
    return replicated_cluster.url


def crash_and_fail_over(cluster: RedisClusterServers, key: str) -> float:
    """SIGKILL the primary serving ``key`` once its replica has every write; returns the
    seconds until the replica serves as primary."""
    index = cluster.serving(key)
    primary, replica = cluster.servers[index], cluster.replicas[index]
    with cluster.clients()[index] as client:
        assert client.execute_command("WAIT", 1, 5000) == 1  # the replica has every write
    primary.process.send_signal(signal.SIGKILL)
    crashed = time.monotonic()
    with cluster.clients()[0 if index else 1] as survivor:

        def promoted() -> bool:
            with redis_sync.Redis(host=replica.host, port=replica.port) as new:
                role = new.info("replication")["role"]
            return bool(survivor.cluster("INFO")["cluster_state"] == "ok" and role == "master")

        wait_for_condition_sync(promoted, timeout_s=20, interval_s=0.05, what="replica promoted")
    return time.monotonic() - crashed


async def submit_when_redis_answers(api: httpx.AsyncClient, prompt: Workflow) -> str:
    """The first submit the balancer accepts (503 redis_unavailable while it reconnects)."""

    async def accepted() -> str | None:
        response = await api.post("/api/v1/generate", json={"prompt": prompt})
        if response.status_code == 503:
            return None
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    return await wait_for_condition(accepted, timeout_s=20, what="a submit accepted")


async def test_the_stack_carries_on_when_the_primary_of_the_shared_slot_fails_over(
    replicated_cluster: RedisClusterServers,  # first: it outlives the processes
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"])
    await cluster.nodes_ready(1)
    before = await submit(cluster.api, graphs.txt2img("before-failover"))
    assert (await wait_until_finished(cluster.api, before["id"]))["status"] == "succeeded"

    took_s = crash_and_fail_over(replicated_cluster, KEYS.root)
    after = await submit_when_redis_answers(cluster.api, graphs.txt2img("after-failover"))

    assert (await wait_until_finished(cluster.api, after, timeout_s=30))["status"] == "succeeded"
    assert (await wait_until_finished(cluster.api, before["id"]))["status"] == "succeeded"
    assert took_s < 15
