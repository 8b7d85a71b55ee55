"""A user's queue, history and jobs through the gateway on a real balancer with one node that
runs one task at a time: shapes as ComfyUI (and its frontend's schema) has them, and every
cancel path."""

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from comfy_testkit import graphs
from comfy_testkit.cluster import Cluster
from comfy_testkit.frontend_schemas import check_job, check_jobs_page
from comfy_testkit.waiting import wait_for_condition

SLOW_STEPS = 3000
"""A sampler of this many 10 ms steps runs for 30 s: until a test stops it."""


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"], balancer_args=["--slots-per-node", "1"])


async def queue_prompt(api: httpx.AsyncClient, graph: dict[str, Any], **fields: Any) -> str:
    response = await api.post("/prompt", json={"prompt": graph, "client_id": "tab", **fields})
    assert response.status_code == 200, response.text
    prompt_id: str = response.json()["prompt_id"]
    return prompt_id


async def job_status(api: httpx.AsyncClient, prompt_id: str) -> str:
    job = (await api.get(f"/api/jobs/{prompt_id}")).json()
    status: str = job["status"]
    return status


async def wait_job(api: httpx.AsyncClient, prompt_id: str, *statuses: str) -> None:
    async def reached() -> bool:
        return await job_status(api, prompt_id) in statuses

    await wait_for_condition(reached, timeout_s=30, what=f"{prompt_id} {statuses}")


async def test_the_queue_shows_and_cancels_as_comfyui_does(cluster: Cluster) -> None:
    api = cluster.api
    await cluster.nodes_ready(1)
    slow = await queue_prompt(api, graphs.txt2img(fresh("slow"), steps=SLOW_STEPS))
    await wait_job(api, slow, "in_progress")
    second = await queue_prompt(api, graphs.solid_image(fresh("second")))
    third = await queue_prompt(api, graphs.solid_image(fresh("third")))
    front = await queue_prompt(api, graphs.solid_image(fresh("front")), front=True)

    assert (await api.get("/prompt")).json() == {"exec_info": {"queue_remaining": 4}}
    queue = (await api.get("/api/queue")).json()
    assert [item[1] for item in queue["queue_running"]] == [slow]
    assert [item[1] for item in queue["queue_pending"]] == [second, third, front]
    for item in queue["queue_running"] + queue["queue_pending"]:
        number, _, prompt, extra_data, outputs = item
        assert isinstance(number, int)
        assert "SaveImage" in [node["class_type"] for node in prompt.values()]
        assert (extra_data["client_id"], type(extra_data["create_time"])) == ("tab", int)
        assert outputs in (["3"], ["9"])
    active = (await api.get("/api/jobs", params={"status": "in_progress,pending"})).json()
    check_jobs_page(active)
    assert {job["id"]: job["status"] for job in active["jobs"]} == {
        slow: "in_progress", second: "pending", third: "pending", front: "pending",
    }  # fmt: skip

    deleted = await api.post("/queue", json={"delete": [second, slow]})  # the running one stays
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert await job_status(api, second) == "cancelled"
    await api.post("/interrupt", json={"prompt_id": third})  # waiting: left alone, as in ComfyUI
    bad = await api.post("/api/jobs/cancel", json={"job_ids": [third, "not-a-uuid"]})
    assert (bad.status_code, bad.json()["invalid_ids"]) == (400, ["not-a-uuid"])
    assert await job_status(api, slow) == "in_progress"
    assert await job_status(api, third) == "pending"

    interrupted = await api.post("/interrupt")  # no body: this user's running prompt
    assert (interrupted.status_code, interrupted.content) == (200, b"")
    await wait_job(api, third, "completed")
    done = {job["id"]: job for job in (await api.get("/api/jobs")).json()["jobs"]}
    assert done[slow]["status"] == "cancelled"
    # "front" came before "third", sent earlier: within this user's own prompts only.
    assert done[front]["execution_start_time"] < done[third]["execution_start_time"]
    assert (await api.get("/prompt")).json()["exec_info"]["queue_remaining"] == 0


async def test_history_and_jobs_show_ended_prompts_and_forget_them_on_request(
    cluster: Cluster,
) -> None:
    api = cluster.api
    await cluster.nodes_ready(1)
    ok = await queue_prompt(api, graphs.solid_image(fresh("ok")), extra_data={
        "extra_pnginfo": {"workflow": {"id": "wf-7", "nodes": []}}
    })  # fmt: skip
    failing = await queue_prompt(api, graphs.runtime_error(fresh("err")))
    running = await queue_prompt(api, graphs.txt2img(fresh("slow"), steps=SLOW_STEPS))
    await wait_job(api, running, "in_progress")
    assert (await api.get(f"/history/{running}")).json() == {}  # not ended: nothing yet

    cancelled = await api.post(f"/api/jobs/{running}/cancel")
    assert cancelled.json() == {"cancelled": True}
    assert (await api.post(f"/api/jobs/{running}/cancel")).json() == {"cancelled": False}
    assert (await api.post(f"/api/jobs/{uuid.uuid4()}/cancel")).json() == {"cancelled": False}
    await wait_job(api, running, "cancelled")

    history = (await api.get("/history")).json()
    assert list(history) == [ok, failing, running]  # oldest first, as ComfyUI
    assert history[ok]["status"]["status_str"] == "success"
    [image] = history[ok]["outputs"]["3"]["images"]
    assert (image["subfolder"], image["type"]) == (ok, "output")
    error_status = history[failing]["status"]
    assert (error_status["status_str"], error_status["messages"][-1][0]) == (
        "error", "execution_error",
    )  # fmt: skip
    assert error_status["messages"][-1][1]["node_type"] == "ImageToMask"
    assert history[running]["status"]["messages"][-1][0] == "execution_interrupted"
    assert list((await api.get("/history", params={"max_items": 2})).json()) == [failing, running]
    assert list((await api.get("/history", params={"offset": 1, "max_items": 1})).json()) == [
        failing
    ]

    page = (await api.get("/api/jobs", params={"limit": 2, "sort_order": "asc"})).json()
    check_jobs_page(page)
    assert [job["id"] for job in page["jobs"]] == [ok, failing]
    assert page["pagination"] == {"offset": 0, "limit": 2, "total": 3, "has_more": True}
    detail = (await api.get(f"/api/jobs/{ok}")).json()
    check_job(detail, detail=True)
    assert (detail["workflow_id"], detail["preview_output"]["nodeId"]) == ("wf-7", "3")
    assert detail["workflow"]["extra_data"]["extra_pnginfo"]["workflow"]["id"] == "wf-7"
    by_workflow = (await api.get("/api/jobs", params={"workflow_id": "wf-7"})).json()
    assert [job["id"] for job in by_workflow["jobs"]] == [ok]
    failed = (await api.get(f"/api/jobs/{failing}")).json()
    assert failed["execution_error"]["exception_type"] == "IndexError"
    assert (await api.get("/api/jobs", params={"status": "done"})).status_code == 400
    assert (await api.get(f"/api/jobs/{uuid.uuid4()}")).json() == {"error": "Job not found"}

    await api.post("/history", json={"delete": [failing]})
    assert list((await api.get("/history")).json()) == [ok, running]
    assert (await api.get(f"/api/jobs/{failing}")).status_code == 404
    await api.post("/api/history", json={"clear": True})
    assert (await api.get("/history")).json() == {}
    assert (await api.get("/api/jobs")).json()["jobs"] == []
