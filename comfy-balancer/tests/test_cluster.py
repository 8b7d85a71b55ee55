"""The balancer with real services, emulators and Redis, each a real process."""

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import get_task, read_sse, submit, wait_for_status, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.waiting import wait_for_condition


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def all_finished(
    api: httpx.AsyncClient, ids: list[str], timeout_s: float = 60
) -> list[dict[str, Any]]:
    return list(
        await asyncio.gather(*(wait_until_finished(api, i, timeout_s=timeout_s) for i in ids))
    )


async def test_tasks_spread_over_the_nodes_and_outputs_come_through_the_balancer(
    cluster: Cluster,
) -> None:
    await cluster.nodes_ready(2)
    ids = [
        (await submit(cluster.api, graphs.txt2img(f"s-{fresh()}", steps=20)))["id"]
        for _ in range(6)
    ]

    tasks = await all_finished(cluster.api, ids)

    assert {t["status"] for t in tasks} == {"succeeded"}
    assert set(Counter(t["node_id"] for t in tasks)) == {"a", "b"}
    download = await cluster.api.get(tasks[0]["outputs"][0]["url"])
    assert download.status_code == 200
    assert download.content.startswith(b"\x89PNG")
    events = await read_sse(cluster.api, f"/api/v1/tasks/{ids[0]}/events", last_event_id="0-0")
    statuses = [e["data"]["task"]["status"] for e in events]
    assert statuses[0] == "queued"
    assert "dispatched" in statuses
    assert statuses[-1] == "succeeded"


async def test_a_faster_node_gets_more_work(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(emulator_args={"b": ["--speed", "4"]})
    await cluster.nodes_ready(2)
    ids = [  # distinct seeds: ComfyUI must not serve the sampler from its cache
        (await submit(cluster.api, graphs.txt2img(f"f-{fresh()}", steps=20, seed=i)))["id"]
        for i in range(16)
    ]

    tasks = await all_finished(cluster.api, ids)

    per_node = Counter(t["node_id"] for t in tasks)
    assert per_node["b"] > per_node["a"] * 1.5, per_node


async def test_a_task_waits_for_a_fast_node_rather_than_run_longer_on_a_free_slow_one(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(emulator_args={"b": ["--speed", "8"]}, step_time_s=0.05)
    await cluster.nodes_ready(2)
    for node in cluster.nodes:  # each node measures its speed on its second (hot) task
        async with httpx.AsyncClient(
            base_url=node.service.url, headers=node.service.auth_headers, timeout=10
        ) as service:
            for seed in (1, 2):
                graph = graphs.txt2img(f"w-{fresh()}", steps=10, seed=seed)
                await wait_until_finished(service, (await submit(service, graph))["id"])

    async def speeds_published() -> bool:
        nodes = (await cluster.api.get("/api/v1/nodes")).json()
        return all(node["health"] and node["health"]["speed"] for node in nodes)

    await wait_for_condition(speeds_published, what="both nodes' speeds")

    # 20 steps: ~1 s on "a", ~0.15 s on "b". With two slots per node, the third task would
    # start at once on the free "a" under least-loaded; it finishes sooner queued behind "b".
    ids = [
        (await submit(cluster.api, graphs.txt2img(f"e-{fresh()}", steps=20)))["id"]
        for _ in range(3)
    ]

    tasks = await all_finished(cluster.api, ids)
    assert [t["node_id"] for t in tasks] == ["b", "b", "b"]


async def test_queue_positions_decrease_and_priorities_go_first(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"], balancer_args=["--slots-per-node", "1"])
    await cluster.nodes_ready(1)
    blocker = await submit(cluster.api, graphs.txt2img(f"b-{fresh()}", steps=60))
    await wait_for_status(cluster.api, blocker["id"], {"running"})
    low = [await submit(cluster.api, graphs.solid_image(f"l-{fresh()}")) for _ in range(3)]
    high = await submit(cluster.api, graphs.solid_image(f"h-{fresh()}"), priority=10)

    assert [t["queue_position"] for t in low] == [0, 1, 2]
    assert high["queue_position"] == 0
    assert (await get_task(cluster.api, low[2]["id"]))["queue_position"] == 3
    queue = (await cluster.api.get("/api/v1/queue")).json()
    assert queue["pending"] == 4
    assert (queue["by_band"], queue["aged"]) == ({"standard": 4}, 0)

    finished = await all_finished(cluster.api, [high["id"], *(t["id"] for t in low)])
    started = [t["started_at"] for t in finished]
    assert started == sorted(started)  # high first, then the low ones in arrival order


async def test_cancel_while_queued_prefetched_and_running(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Two slots, the second filled at once: one running, one prefetched in ComfyUI.
    cluster = make_cluster(["a"], balancer_args=["--prefetch-lead-s", "3600"])
    await cluster.nodes_ready(1)
    running = await submit(cluster.api, graphs.txt2img(f"r-{fresh()}", steps=300))
    prefetched = await submit(cluster.api, graphs.txt2img(f"p-{fresh()}", steps=5))
    queued = await submit(cluster.api, graphs.txt2img(f"q-{fresh()}", steps=5))
    last = await submit(cluster.api, graphs.solid_image(f"z-{fresh()}"))
    await wait_for_status(cluster.api, running["id"], {"running"})
    await wait_for_status(cluster.api, prefetched["id"], {"dispatched"})

    for task in (queued, prefetched, running):
        response = await cluster.api.delete(f"/api/v1/tasks/{task['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"

    assert (await wait_until_finished(cluster.api, last["id"]))["status"] == "succeeded"
    stats = await cluster.node("a").control.stats()
    assert queued["id"] not in stats["executions"]
    assert prefetched["id"] not in stats["executions"]
    finished_again = await cluster.api.delete(f"/api/v1/tasks/{running['id']}")
    assert (finished_again.status_code, finished_again.json()["status"]) == (409, "cancelled")


async def test_a_killed_node_s_task_completes_on_another_node(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(balancer_args=["--strategy", "round-robin"])
    await cluster.nodes_ready(2)
    task = await submit(cluster.api, graphs.txt2img(f"k-{fresh()}", steps=400))
    running = await wait_for_status(cluster.api, task["id"], {"running"})
    victim = cluster.node(running["node_id"])

    victim.kill()

    done = await wait_until_finished(cluster.api, task["id"], timeout_s=30)
    assert done["status"] == "succeeded"
    assert done["node_id"] != victim.node_id
    assert done["attempts"] == 2
    assert [a["node_id"] for a in done["attempt_log"]] == [victim.node_id, done["node_id"]]


async def test_out_of_memory_on_one_node_is_retried_on_another(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    await cluster.nodes_ready(2)
    for node in cluster.nodes:
        await node.control.fail_next(1)
    task = await submit(cluster.api, graphs.txt2img(f"o-{fresh()}", steps=5))

    done = await wait_until_finished(cluster.api, task["id"])

    # Both nodes fail once; the third attempt succeeds on whichever node is free.
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 3
    assert "out of memory" in done["attempt_log"][0]["outcome"]


async def test_validation_errors_from_the_node_are_not_retried(cluster: Cluster) -> None:
    await cluster.nodes_ready(2)
    task = await submit(cluster.api, graphs.runtime_error(f"e-{fresh()}"))
    done = await wait_until_finished(cluster.api, task["id"])
    assert (done["status"], done["error"]["type"], done["attempts"]) == ("failed", "comfyui", 1)

    # What only the node can refuse (its LoadImage checks the file exists); a graph any
    # ComfyUI refuses is answered 422 at submit (test_validation_at_the_door.py).
    missing_file = graphs.solid_image(f"v-{fresh()}")
    missing_file["2"] = {"class_type": "LoadImage", "inputs": {"image": "no-such-file.png"}}
    invalid = await submit(cluster.api, missing_file)
    rejected = await wait_until_finished(cluster.api, invalid["id"])
    assert (rejected["status"], rejected["error"]["type"], rejected["attempts"]) == (
        "failed",
        "validation",
        1,
    )


async def test_a_node_whose_comfyui_is_down_gets_no_work_until_it_is_back(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    await cluster.nodes_ready(2)
    await cluster.node("a").control.go_down(4)

    async def a_is_down() -> bool:
        nodes = {n["node_id"]: n for n in (await cluster.api.get("/api/v1/nodes")).json()}
        return bool(nodes["a"]["state"] == "comfyui-down")

    await wait_for_condition(a_is_down, what="node a reported comfyui-down")
    ids = [(await submit(cluster.api, graphs.solid_image(f"d-{fresh()}")))["id"] for _ in range(4)]
    assert {t["node_id"] for t in await all_finished(cluster.api, ids)} == {"b"}

    await cluster.nodes_ready(2)
    await cluster.node("b").control.go_down(30)
    later = await submit(cluster.api, graphs.solid_image(f"u-{fresh()}"))
    assert (await wait_until_finished(cluster.api, later["id"]))["node_id"] == "a"


async def test_idempotency_key_and_task_id_never_run_twice(cluster: Cluster) -> None:
    await cluster.nodes_ready(2)
    body = {"prompt": graphs.solid_image(f"i-{fresh()}")}
    headers = {"Idempotency-Key": f"key-{fresh()}"}
    first, second = await asyncio.gather(
        cluster.api.post("/api/v1/generate", json=body, headers=headers),
        cluster.api.post("/api/v1/generate", json=body, headers=headers),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 202]
    assert first.json()["id"] == second.json()["id"]

    task_id = f"mine-{fresh()}"
    chosen = {**body, "task_id": task_id}
    again = [await cluster.api.post("/api/v1/generate", json=chosen) for _ in range(2)]
    assert [r.status_code for r in again] == [202, 200]
    await wait_until_finished(cluster.api, task_id)
    executions = await cluster.executions([first.json()["id"], task_id])
    assert executions == {first.json()["id"]: 1, task_id: 1}


async def test_a_full_queue_answers_429_with_retry_after(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"], balancer_args=["--max-queue", "2", "--slots-per-node", "1"])
    await cluster.nodes_ready(1)
    blocker = await submit(cluster.api, graphs.txt2img(f"b-{fresh()}", steps=300))
    await wait_for_status(cluster.api, blocker["id"], {"running"})
    for _ in range(2):
        await submit(cluster.api, graphs.solid_image(f"q-{fresh()}"))

    refused = await cluster.api.post("/api/v1/generate", json={"prompt": graphs.solid_image("x")})

    assert (refused.status_code, refused.json()["code"]) == (429, "queue_full")
    assert int(refused.headers["retry-after"]) > 0


async def test_task_list_filters_by_status_and_pages(cluster: Cluster) -> None:
    await cluster.nodes_ready(2)
    ids = [(await submit(cluster.api, graphs.solid_image(f"l-{fresh()}")))["id"] for _ in range(5)]
    await all_finished(cluster.api, ids)

    first = (await cluster.api.get("/api/v1/tasks", params={"limit": 3})).json()
    second = (
        await cluster.api.get("/api/v1/tasks", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    failed = (await cluster.api.get("/api/v1/tasks", params={"status": "failed"})).json()

    listed = [t["id"] for t in first["tasks"] + second["tasks"]]
    assert listed == list(reversed(ids))
    assert failed["tasks"] == []


async def test_the_log_of_a_task_retried_on_a_second_node_is_one_timeline(
    cluster: Cluster,
) -> None:
    await cluster.nodes_ready(2)
    await cluster.node("a").control.fail_next(1)  # nothing measured yet: a tie, which "a" wins
    task = await submit(cluster.api, graphs.txt2img(f"t-{fresh()}", steps=5))
    done = await wait_until_finished(cluster.api, task["id"])
    assert [a["node_id"] for a in done["attempt_log"]] == ["a", "b"]

    async def timeline() -> list[dict[str, Any]] | None:
        path = f"/api/v1/tasks/{task['id']}/logs"
        records: list[dict[str, Any]] = (
            await cluster.api.get(path, params={"format": "json"})
        ).json()
        writers = {(r["service"], r["node"], r.get("source")) for r in records}
        wanted = {
            ("balancer", "balancer", None),
            ("service", "a", None),
            ("service", "a", "comfyui"),
            ("service", "b", None),
            ("service", "b", "comfyui"),
        }
        return records if wanted <= writers else None

    records = await wait_for_condition(timeline, what="every writer in the timeline")
    messages = [r["message"] for r in records]
    assert messages.count("task dispatched") == 2
    assert {r["node"] for r in records if r["service"] == "balancer"} == {"balancer"}
    placed = [r["to_node"] for r in records if r["message"] == "task dispatched"]
    assert placed == ["a", "b"]
    assert messages.count("task back in the queue for another node") == 1  # one WARNING
    comfy_errors = {r["message"] for r in records if r["level"] == "ERROR"}
    assert any(m.startswith("torch.OutOfMemoryError: CUDA out of memory") for m in comfy_errors)
    assert "Traceback (most recent call last):" in comfy_errors
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
