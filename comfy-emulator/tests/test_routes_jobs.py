"""/api/jobs over real HTTP: absent with 0.8.0, list/detail and cancel by job id with 0.26.0.

The answers are compared whole (status, Content-Type, JSON body), as the conformance tests do
for the recorded 0.8.0 exchanges; the 0.26.0 shapes come from the protocol notes §9.2/§9.3.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from comfy_emulator import RunningEmulator
from comfy_emulator.testing import EmulatorClient
from comfy_emulator.workflows import solid_image

SOME_ID = "7b0c2d7e-0a8e-4a43-9a55-0f3c3d6f8c11"


@pytest.fixture
async def client(start: Any) -> AsyncIterator[EmulatorClient]:
    """A client of an emulator playing ComfyUI 0.26.0."""
    running: RunningEmulator = await start(comfyui_version="0.26.0")
    async with EmulatorClient(running.url) as client:
        yield client


async def request(
    client: EmulatorClient, method: str, path: str, body: bytes | None = None
) -> tuple[int, str, Any]:
    """(status, content type, parsed JSON or raw text) of one exchange."""
    async with client.session.request(method, client.base_url + path, data=body) as response:
        text = await response.text()
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = text
        return response.status, response.content_type, parsed


async def cancel(client: EmulatorClient, job_id: str, prefix: str = "/api") -> Any:
    status, content_type, body = await request(client, "POST", f"{prefix}/jobs/{job_id}/cancel")
    assert (status, content_type) == (200, "application/json")
    return body


async def cancel_batch(client: EmulatorClient, body: Any) -> tuple[int, Any]:
    status, content_type, answer = await request(
        client, "POST", "/api/jobs/cancel", json.dumps(body).encode()
    )
    assert content_type == "application/json"
    return status, answer


async def submit(client: EmulatorClient, name: str) -> str:
    prompt_id = str(uuid.uuid4())
    await client.post_prompt(solid_image(prefix=name), prompt_id=prompt_id)
    return prompt_id


async def hold_worker(client: EmulatorClient) -> str:
    """A prompt that hangs in its first node (until interrupted), so later ones stay pending."""
    await client.post_json("/emulator/hang-next", {"count": 1})
    blocker = await submit(client, "blocker")
    await client.wait_running(blocker)
    return blocker


async def queue_ids(client: EmulatorClient) -> tuple[list[str], list[str]]:
    queue = await client.get_json("/queue")
    return [i[1] for i in queue["queue_running"]], [i[1] for i in queue["queue_pending"]]


async def job(client: EmulatorClient, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await client.get_json(f"/api/jobs/{job_id}")
    return found


# ---- 0.8.0: no jobs routes at all -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/jobs"),
        ("GET", f"/api/jobs/{SOME_ID}"),
        ("POST", f"/api/jobs/{SOME_ID}/cancel"),
        ("POST", "/api/jobs/cancel"),
        ("GET", "/api/api/jobs"),
        ("POST", f"/api/api/jobs/{SOME_ID}/cancel"),
    ],
)
async def test_0_8_0_has_no_jobs_routes(start: Any, method: str, path: str) -> None:
    running: RunningEmulator = await start()
    async with EmulatorClient(running.url) as client:
        status, _, _ = await request(client, method, path, b'{"job_ids": []}')
    assert status == 404


# ---- 0.26.0: where the routes live ----------------------------------------------------------


async def test_routes_live_under_api_and_api_api_never_bare(client: EmulatorClient) -> None:
    for path in ("/api/jobs", "/api/api/jobs"):
        status, _, body = await request(client, "GET", path)
        assert (status, body["pagination"]["total"]) == (200, 0)
    assert await cancel(client, SOME_ID, prefix="/api/api") == {"cancelled": False}
    for method, path in (("GET", "/jobs"), ("POST", f"/jobs/{SOME_ID}/cancel")):
        assert (await request(client, method, path))[0] == 404
    # GET of the batch path is the detail route of a job called "cancel".
    status, _, body = await request(client, "GET", "/api/jobs/cancel")
    assert (status, body) == (404, {"error": "Job not found"})


# ---- 0.26.0: cancel one job -----------------------------------------------------------------


async def test_cancel_a_pending_job_dequeues_it_and_leaves_the_running_one(
    client: EmulatorClient,
) -> None:
    blocker = await hold_worker(client)
    pending = await submit(client, "pending")

    assert await cancel(client, pending) == {"cancelled": True}

    assert await queue_ids(client) == ([blocker], [])
    assert await cancel(client, pending) == {"cancelled": False}  # gone: unknown now
    await client.post_json("/emulator/release")
    assert (await client.wait_for_history(blocker))["status"]["status_str"] == "success"
    await client.wait_idle()
    assert pending not in await client.get_json("/history")
    assert pending not in (await client.get_json("/emulator/stats"))["executions"]


async def test_cancel_the_running_job_interrupts_it_and_the_queue_goes_on(
    client: EmulatorClient,
) -> None:
    blocker = await hold_worker(client)
    after = await submit(client, "after")

    assert await cancel(client, blocker) == {"cancelled": True}

    entry = await client.wait_for_history(blocker)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert (await client.wait_for_history(after))["status"]["status_str"] == "success"
    assert (await job(client, blocker))["status"] == "cancelled"
    assert (await job(client, after))["status"] == "completed"


async def test_cancel_a_finished_or_unknown_id_is_false_and_changes_nothing(
    client: EmulatorClient,
) -> None:
    done = await submit(client, "done")
    entry = await client.wait_for_history(done)

    for job_id in (done, str(uuid.uuid4()), "not-a-uuid"):  # no format check on this route
        assert await cancel(client, job_id) == {"cancelled": False}
    assert (await client.history(done))[done] == entry
    assert (await job(client, done))["status"] == "completed"


# ---- 0.26.0: cancel a batch -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_body", "error"),
    [
        (b"", "Request body must be valid JSON"),
        (b"{not json", "Request body must be valid JSON"),
        (b"[]", "job_ids must be a list"),
        (b"{}", "job_ids must be a list"),
        (b'{"job_ids": "' + SOME_ID.encode() + b'"}', "job_ids must be a list"),
        (b'{"job_ids": null}', "job_ids must be a list"),
    ],
)
async def test_batch_cancel_of_a_malformed_body_is_400(
    client: EmulatorClient, raw_body: bytes, error: str
) -> None:
    status, content_type, body = await request(client, "POST", "/api/jobs/cancel", raw_body)
    assert (status, content_type, body) == (400, "application/json", {"error": error})


async def test_batch_cancel_with_an_invalid_id_cancels_nothing(client: EmulatorClient) -> None:
    blocker = await hold_worker(client)
    pending = await submit(client, "pending")
    job_ids = [pending, blocker, 5, None, SOME_ID.upper(), "p-1", {"a": 1}]

    status, body = await cancel_batch(client, {"job_ids": job_ids})

    assert (status, body) == (
        400,
        {
            "error": "job_ids contains invalid id(s)",
            "invalid_ids": ["5", "None", SOME_ID.upper(), "p-1", "{'a': 1}"],
        },
    )
    assert await queue_ids(client) == ([blocker], [pending])
    await client.post_json("/emulator/release")


async def test_batch_cancel_acts_on_every_id_best_effort(client: EmulatorClient) -> None:
    blocker = await hold_worker(client)
    first, second, kept = [await submit(client, name) for name in ("first", "second", "kept")]

    ids = [str(uuid.uuid4()), first, blocker, second]
    assert await cancel_batch(client, {"job_ids": ids}) == (200, {"cancelled": True})

    assert (await client.wait_for_history(blocker))["status"]["status_str"] == "error"
    assert (await client.wait_for_history(kept))["status"]["status_str"] == "success"
    history = await client.get_json("/history")
    assert first not in history
    assert second not in history


async def test_batch_cancel_with_nothing_to_cancel_is_false(client: EmulatorClient) -> None:
    done = await submit(client, "done")
    await client.wait_for_history(done)
    assert await cancel_batch(client, {"job_ids": []}) == (200, {"cancelled": False})
    assert await cancel_batch(client, {"job_ids": [done, SOME_ID]}) == (200, {"cancelled": False})


# ---- 0.26.0: list and detail ----------------------------------------------------------------


async def test_list_and_detail_report_each_outcome(client: EmulatorClient) -> None:
    ok = await submit(client, "ok")
    await client.wait_for_history(ok)
    await client.post_json("/emulator/fail-next", {"count": 1})
    failed = await submit(client, "failed")
    await client.wait_for_history(failed)
    cancelled = await hold_worker(client)
    pending = await submit(client, "pending")
    await client.post_json("/emulator/hang-next", {"count": 1})  # `pending` hangs in its turn
    await cancel(client, cancelled)
    await client.wait_for_history(cancelled)
    await client.wait_running(pending)

    listed = await client.get_json("/api/jobs")

    statuses = {item["id"]: item["status"] for item in listed["jobs"]}
    assert statuses == {
        ok: "completed",
        failed: "failed",
        cancelled: "cancelled",
        pending: "in_progress",
    }
    assert listed["pagination"] == {"offset": 0, "limit": None, "total": 4, "has_more": False}
    detail = await job(client, ok)
    assert detail["preview_output"] == {
        **detail["outputs"]["3"]["images"][0],
        "nodeId": "3",
        "mediaType": "images",
    }
    assert (detail["outputs_count"], detail["previewable_outputs_count"]) == (1, 1)
    assert detail["workflow"]["prompt"] == solid_image(prefix="ok")
    assert detail["execution_end_time"] >= detail["execution_start_time"]
    failed_detail = await job(client, failed)
    assert failed_detail["execution_error"]["exception_type"] == "torch.OutOfMemoryError"
    only = await client.get_json("/api/jobs?status=cancelled,in_progress&limit=1")
    assert [item["status"] for item in only["jobs"]] in (["cancelled"], ["in_progress"])
    assert only["pagination"] == {"offset": 0, "limit": 1, "total": 2, "has_more": True}
    await cancel(client, pending)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("status=done", "Invalid status value(s): done. Valid values: "),
        ("sort_by=name", "sort_by must be 'created_at' or 'execution_duration'"),
        ("sort_order=up", "sort_order must be 'asc' or 'desc'"),
        ("limit=0", "limit must be a positive integer"),
        ("offset=x", "offset must be an integer"),
    ],
)
async def test_list_with_a_bad_query_is_400(client: EmulatorClient, query: str, error: str) -> None:
    status, content_type, body = await request(client, "GET", f"/api/jobs?{query}")
    assert (status, content_type) == (400, "application/json")
    assert list(body) == ["error"]
    assert body["error"].startswith(error)


async def test_detail_of_an_unknown_job_is_404(client: EmulatorClient) -> None:
    status, content_type, body = await request(client, "GET", f"/api/jobs/{SOME_ID}")
    assert (status, content_type, body) == (404, "application/json", {"error": "Job not found"})
