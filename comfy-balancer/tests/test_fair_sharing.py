"""Fair sharing through a real balancer: tenants take turns behind a heavy backlog, positions
tell the order tasks start in, bands, and a group's cap (the policy's own tables are in
shared/tests/test_fair_queue.py)."""

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from comfy_testkit import graphs
from comfy_testkit.api import get_task, submit, wait_for_status, wait_until_finished
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.sse_client import RawSseStream


def task_id(owner: str) -> str:
    """Ids that sort by owner: tasks whose turns tie start in id order."""
    return f"{owner}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """One node running one task at a time; event streams look at the queue often."""
    return make_cluster(["a"], balancer_args=["--slots-per-node", "1", "--sse-heartbeat-s", "0.3"])


async def submit_as(client: httpx.AsyncClient, owner: str, **fields: Any) -> dict[str, Any]:
    return await submit(client, graphs.solid_image(owner), task_id=task_id(owner), **fields)


async def test_light_tenants_go_ahead_of_a_heavy_backlog_in_the_order_their_positions_say(
    cluster: Cluster, keys: KeyClients
) -> None:
    heavy, ann, bo = [await keys.make(name) for name in ("heavy", "ann", "bo")]
    await cluster.node("a").control.hang_next(6)  # each task but the last, released in turn
    first = await submit_as(heavy, "heavy")
    await wait_for_status(heavy, first["id"], {"running"})
    backlog = [await submit_as(heavy, "heavy") for _ in range(4)]

    light = [await submit_as(ann, "ann"), await submit_as(bo, "bo")]

    assert [task["queue_position"] for task in light] == [0, 1]
    waiting = [*light, *backlog]
    positions = [(await get_task(cluster.api, task["id"]))["queue_position"] for task in waiting]
    assert positions == [0, 1, 2, 3, 4, 5]  # Ann and Bo behind only the running task
    etas = [(await get_task(cluster.api, task["id"]))["eta"] for task in waiting]
    starts = [eta["start"] for eta in etas]
    assert starts == sorted(starts)
    assert all(eta["finish"] > eta["start"] for eta in etas)
    # the last one's stream says each step forward as the tasks ahead start one by one
    stream = await RawSseStream.open(cluster.balancer.url, f"{waiting[-1]['links']['self']}/events")
    assert (await next_queue_event(stream))["queue_position"] == 5
    for position in (4, 3, 2, 1, 0):
        await cluster.node("a").control.release()
        await wait_for_position(stream, position)
    await cluster.node("a").control.release()
    finished = await asyncio.gather(
        *(wait_until_finished(cluster.api, task["id"]) for task in waiting)
    )
    await stream.close()
    started = [task["started_at"] for task in finished]
    assert started == sorted(started)  # they started in the order of their positions


async def test_a_key_asks_only_for_the_bands_it_is_allowed(
    cluster: Cluster, keys: KeyClients
) -> None:
    student = await keys.make("student")
    teacher = await keys.make("teacher", share={"max_band": "interactive"})
    await cluster.node("a").control.hang_next()
    await submit_as(student, "student")
    queued = [await submit_as(student, "student") for _ in range(2)]

    refused = await student.post(
        "/api/v1/generate", json={"prompt": graphs.solid_image("s"), "band": "interactive"}
    )
    urgent = await submit_as(teacher, "teacher", band="interactive")

    assert (refused.status_code, refused.json()["code"]) == (403, "band_not_allowed")
    assert (urgent["band"], urgent["queue_position"]) == ("interactive", 0)
    assert (await get_task(student, queued[0]["id"]))["queue_position"] == 1
    queue = (await cluster.api.get("/api/v1/queue")).json()
    assert queue["by_band"] == {"interactive": 1, "standard": 2}
    await cluster.node("a").control.release()


async def test_a_group_runs_at_most_its_cap_while_other_tenants_use_free_nodes(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a", "b"], balancer_args=["--slots-per-node", "1"])
    cap = await cluster.api.put("/api/v1/groups/physics", json={"max_running": 1})
    assert cap.status_code == 200, cap.text
    async with KeyClients(cluster) as keys:
        one, two = [await keys.make(n, share={"group": "physics"}) for n in ("s1", "s2")]
        outsider = await keys.make("outsider")
        for node in ("a", "b"):
            await cluster.node(node).control.hang_next()
        held = await submit_as(one, "s1")
        await wait_for_status(one, held["id"], {"running"})

        waiting = await submit_as(two, "s2")
        other = await submit_as(outsider, "outsider")

        # the outsider's task, submitted after s2's, takes the free node: s2's waits its turn
        await wait_for_status(outsider, other["id"], {"running"})
        assert (await get_task(two, waiting["id"]))["status"] == "queued"
        assert (await cluster.api.get("/api/v1/groups")).json() == {"physics": {"max_running": 1}}
        for node in ("a", "b"):
            await cluster.node(node).control.release()
        assert (await wait_until_finished(two, waiting["id"]))["status"] == "succeeded"


async def next_queue_event(stream: RawSseStream) -> dict[str, Any]:
    while (frame := await asyncio.wait_for(stream.next_event(), timeout=10)) is not None:
        if frame.event == "queue" and frame.data is not None:
            return frame.data
    raise AssertionError("the stream ended without a queue event")


async def wait_for_position(stream: RawSseStream, position: int) -> None:
    """Read ``queue`` events up to the one at ``position``; none may skip past it."""
    while (told := (await next_queue_event(stream))["queue_position"]) != position:
        assert told > position, (told, position)


async def test_a_prefetch_slot_waits_until_the_running_task_nearly_ends_so_a_newcomer_goes_next(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Two slots, the default lead (0.5 s); nothing measured yet, so a 20-step task is taken
    # for 20 s: the node's second slot stays closed while the first task runs.
    cluster = make_cluster(["a"], balancer_args=["--slots-per-node", "2"])
    async with KeyClients(cluster) as keys:
        heavy, light = await keys.make("heavy"), await keys.make("light")
        await cluster.node("a").control.hang_next()
        running = await submit(heavy, graphs.txt2img("heavy-0", steps=20), task_id="heavy-0")
        await wait_for_status(heavy, running["id"], {"running"})
        backlog = [
            await submit(heavy, graphs.txt2img(f"heavy-{i}", steps=20), task_id=f"heavy-{i}")
            for i in (1, 2)
        ]
        assert [(await get_task(heavy, t["id"]))["status"] for t in backlog] == ["queued"] * 2

        newcomer = await submit(light, graphs.txt2img("light", steps=20), task_id="light-0")
        assert newcomer["queue_position"] == 0
        await cluster.node("a").control.release()
        finished = await asyncio.gather(
            *(wait_until_finished(cluster.api, t["id"]) for t in [running, newcomer, *backlog])
        )

    # Had heavy-1 been prefetched while heavy-0 ran, it would have started before light-0.
    order = [task["id"] for task in sorted(finished, key=lambda task: task["started_at"])]
    assert order == ["heavy-0", "light-0", "heavy-1", "heavy-2"]
    assert {task["status"] for task in finished} == {"succeeded"}
