"""comfy-service over real HTTP, with a real Redis and the emulator as ComfyUI (real processes)."""

import asyncio
import io
import uuid
from datetime import datetime, timedelta
from itertools import pairwise

import httpx
from PIL import Image

from comfy_testkit import graphs
from comfy_testkit.api import (
    get_task,
    read_sse,
    submit,
    wait_for_status,
    wait_until_finished,
)
from comfy_testkit.waiting import wait_for_condition


def fresh() -> str:
    return uuid.uuid4().hex[:8]


async def test_generate_runs_the_graph_and_serves_the_png(api: httpx.AsyncClient) -> None:
    accepted = await submit(api, graphs.solid_image(f"t-{fresh()}", width=40, height=30))
    assert accepted["status"] in ("queued", "running", "succeeded")
    assert accepted["links"]["self"] == f"/api/v1/tasks/{accepted['id']}"

    task = await wait_until_finished(api, accepted["id"])

    assert task["status"] == "succeeded"
    assert task["node_id"] == "node-a"
    assert task["started_at"] is not None
    assert task["finished_at"] is not None
    [output] = task["outputs"]
    assert output["kind"] == "image"
    download = await api.get(output["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(download.content))
    assert image.size == (40, 30)
    assert image.convert("RGB").getpixel((0, 0)) == (0xCC, 0x99, 0x00)  # 0x3366FF inverted


async def test_progress_events_arrive_in_order_and_end_with_the_result(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, graphs.txt2img(f"p-{fresh()}", steps=60))  # 0.6 s of steps

    events = await read_sse(api, f"/api/v1/tasks/{task['id']}/events")

    sampling = [
        e["data"]
        for e in events
        if e["event"] == "progress" and e["data"]["task"]["progress"]["max"] == 60
    ]
    steps = [event["task"]["progress"]["value"] for event in sampling]
    assert steps == sorted(steps)
    assert steps[-1] == 60
    assert len(set(steps)) >= 6  # followed live, not only at the end
    # ... but stored at most every 50 ms (the last step always).
    times = [
        datetime.fromisoformat(event["at"])
        for event in sampling
        if event["task"]["progress"]["value"] < 60
    ]
    assert all(later - earlier >= timedelta(milliseconds=45) for earlier, later in pairwise(times))
    assert events[-1]["data"]["task"]["status"] == "succeeded"
    assert [e["data"]["task"]["status"] for e in events].index("running") < len(events) - 1


async def test_sse_reconnect_with_last_event_id_gets_exactly_the_missed_events(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, graphs.txt2img(f"r-{fresh()}", steps=6))
    path = f"/api/v1/tasks/{task['id']}/events"
    first_two = await read_sse(api, path, limit=2)
    await wait_until_finished(api, task["id"])

    rest = await read_sse(api, path, last_event_id=first_two[-1]["id"])
    everything = await read_sse(api, path, last_event_id="0-0")

    # A fresh client starts at the state current when it connected, then misses nothing.
    seen = [e["id"] for e in first_two + rest]
    all_ids = [e["id"] for e in everything]
    assert seen == all_ids[all_ids.index(seen[0]) :]
    assert rest[-1]["data"]["task"]["status"] == "succeeded"


async def test_a_late_client_first_gets_the_current_state(api: httpx.AsyncClient) -> None:
    task = await submit(api, graphs.solid_image(f"l-{fresh()}"))
    await wait_until_finished(api, task["id"])

    events = await read_sse(api, f"/api/v1/tasks/{task['id']}/events")

    assert len(events) == 1
    assert events[0]["data"]["task"]["status"] == "succeeded"


async def test_validation_error_is_422_with_comfyui_node_errors(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/generate", json={"prompt": graphs.invalid_width(f"v-{fresh()}")}
    )

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "prompt_rejected"
    assert body["type"] == "validation"
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    [error] = body["node_errors"]["1"]["errors"]
    assert error["type"] == "value_smaller_than_min"
    assert error["extra_info"]["input_name"] == "width"


async def test_unknown_node_class_is_422_even_without_node_errors(api: httpx.AsyncClient) -> None:
    graph = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    response = await api.post("/api/v1/generate", json={"prompt": graph})

    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_prompt"
    assert response.json()["node_errors"] == {}


async def test_rejected_task_with_a_chosen_id_stays_failed_and_does_not_rerun(
    api: httpx.AsyncClient,
) -> None:
    task_id = f"bad-{fresh()}"
    body = {"prompt": graphs.invalid_width(f"v-{fresh()}"), "task_id": task_id}
    assert (await api.post("/api/v1/generate", json=body)).status_code == 422

    task = await get_task(api, task_id)
    assert task["status"] == "failed"
    assert task["error"]["type"] == "validation"
    again = await api.post("/api/v1/generate", json=body)
    assert again.status_code == 200
    assert again.json()["status"] == "failed"


async def test_partly_invalid_graph_runs_the_valid_branch_with_warnings(
    api: httpx.AsyncClient,
) -> None:
    accepted = await submit(api, graphs.partly_invalid(f"w-{fresh()}"))
    task = await wait_until_finished(api, accepted["id"])

    assert task["status"] == "succeeded"
    assert set(task["warnings"]) == {"4"}
    assert [o["node_id"] for o in task["outputs"]] == ["3"]


async def test_runtime_error_fails_the_task_with_type_comfyui(api: httpx.AsyncClient) -> None:
    accepted = await submit(api, graphs.runtime_error(f"e-{fresh()}"))
    task = await wait_until_finished(api, accepted["id"])

    assert task["status"] == "failed"
    assert task["error"]["type"] == "comfyui"
    assert task["error"]["details"]["node_id"] == "2"
    assert task["error"]["details"]["node_type"] == "ImageToMask"
    assert task["error"]["details"]["exception_type"] == "IndexError"


async def test_same_task_id_submitted_twice_runs_once(api: httpx.AsyncClient) -> None:
    task_id = f"once-{fresh()}"
    body = {"prompt": graphs.solid_image(f"d-{fresh()}"), "task_id": task_id}
    first, second = await asyncio.gather(
        api.post("/api/v1/generate", json=body), api.post("/api/v1/generate", json=body)
    )

    assert sorted([first.status_code, second.status_code]) == [200, 202]
    task = await wait_until_finished(api, task_id)
    assert len(task["outputs"]) == 1  # a second run would have written a second file


async def test_identical_graph_served_from_comfyui_cache_still_has_outputs(
    api: httpx.AsyncClient,
) -> None:
    graph = graphs.solid_image(f"c-{fresh()}")
    first = await wait_until_finished(api, (await submit(api, graph))["id"])
    second = await wait_until_finished(api, (await submit(api, graph))["id"])

    assert second["status"] == "succeeded"
    assert [o["filename"] for o in second["outputs"]] == [o["filename"] for o in first["outputs"]]


async def test_cancel_a_queued_task_leaves_the_one_running_before_it_alone(
    api: httpx.AsyncClient,
) -> None:
    running = await submit(api, graphs.txt2img(f"a-{fresh()}", steps=60))
    queued = await submit(api, graphs.solid_image(f"b-{fresh()}"))
    waiting = await get_task(api, queued["id"])
    assert waiting["status"] == "queued"
    assert waiting["queue_position"] == 1

    cancelled = await api.delete(f"/api/v1/tasks/{queued['id']}")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    done = await wait_until_finished(api, running["id"])
    assert done["status"] == "succeeded"
    assert (await get_task(api, queued["id"]))["outputs"] == []


async def test_cancel_a_running_task_interrupts_only_it(api: httpx.AsyncClient) -> None:
    running = await submit(api, graphs.txt2img(f"a-{fresh()}", steps=200))
    behind = await submit(api, graphs.solid_image(f"b-{fresh()}"))
    await wait_for_status(api, running["id"], {"running"})

    cancelled = await api.delete(f"/api/v1/tasks/{running['id']}")

    assert cancelled.json()["status"] == "cancelled"
    next_task = await wait_until_finished(api, behind["id"])
    assert next_task["status"] == "succeeded"
    assert (await get_task(api, running["id"]))["status"] == "cancelled"


async def test_cancel_a_finished_task_is_409_with_its_state(api: httpx.AsyncClient) -> None:
    task = await submit(api, graphs.solid_image(f"f-{fresh()}"))
    await wait_until_finished(api, task["id"])

    response = await api.delete(f"/api/v1/tasks/{task['id']}")

    assert response.status_code == 409
    assert response.json()["code"] == "task_finished"
    assert response.json()["status"] == "succeeded"


async def test_unknown_task_and_output_are_404(api: httpx.AsyncClient) -> None:
    missing = await api.get("/api/v1/tasks/nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "task_not_found")
    assert (await api.delete("/api/v1/tasks/nope")).status_code == 404
    assert (await api.get("/api/v1/tasks/nope/events")).status_code == 404

    task = await submit(api, graphs.solid_image(f"o-{fresh()}"))
    await wait_until_finished(api, task["id"])
    no_output = await api.get(f"/api/v1/tasks/{task['id']}/outputs/5")
    assert (no_output.status_code, no_output.json()["code"]) == (404, "output_not_found")


async def test_malformed_json_is_400_and_wrong_shape_is_422(api: httpx.AsyncClient) -> None:
    malformed = await api.post(
        "/api/v1/generate", content=b'{"prompt": ', headers={"content-type": "application/json"}
    )
    assert (malformed.status_code, malformed.json()["code"]) == (400, "malformed_json")

    wrong = await api.post("/api/v1/generate", json={"prompt": "not a graph"})
    assert (wrong.status_code, wrong.json()["code"]) == (422, "invalid_request")

    ui_format = await api.post("/api/v1/generate", json={"prompt": {"nodes": [], "links": []}})
    assert ui_format.status_code == 422
    assert "Save (API)" in ui_format.json()["detail"]


async def test_an_unknown_workflow_name_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/generate", json={"workflow": "no-such-template"})
    assert (response.status_code, response.json()["code"]) == (422, "unknown_workflow")
    assert "txt2img-sdxl" in response.json()["detail"]  # the known ones are listed


async def test_a_webhook_url_is_refused_rather_than_silently_never_called(
    api: httpx.AsyncClient,
) -> None:
    task_id = f"hook-{uuid.uuid4().hex[:8]}"
    body = {
        "task_id": task_id,
        "prompt": graphs.solid_image("hook"),
        "webhook_url": "https://example.com/hook",
    }

    response = await api.post("/api/v1/generate", json=body)

    assert (response.status_code, response.json()["code"]) == (422, "webhooks_not_sent")
    assert "comfy-balancer" in response.json()["detail"]
    assert (await api.get(f"/api/v1/tasks/{task_id}")).status_code == 404  # nothing was made


async def test_readiness_and_liveness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "comfyui": "ok", "lifecycle": "ok"}


async def test_a_file_of_a_task_running_here_is_served_by_comfyui_s_name(
    api: httpx.AsyncClient,
) -> None:
    done = await submit(api, graphs.solid_image(f"e-{fresh()}"))
    [output] = (await wait_until_finished(api, done["id"]))["outputs"]
    running = await submit(api, graphs.txt2img(f"r-{fresh()}", steps=3000))
    await wait_for_status(api, running["id"], {"running"})
    files = f"/api/v1/tasks/{running['id']}/files/output"

    served = await api.get(files, params={"filename": output["filename"]})
    stored = await api.get(output["url"])
    missing = await api.get(files, params={"filename": "never-written.png"})
    ended = await api.get(f"/api/v1/tasks/{done['id']}/files/output", params={"filename": "x"})

    assert (served.status_code, served.content) == (200, stored.content)
    assert served.headers["content-type"] == "image/png"
    assert (missing.status_code, missing.json()["code"]) == (404, "file_not_found")
    assert (ended.status_code, ended.json()["code"]) == (409, "not_on_this_node")
    await api.delete(f"/api/v1/tasks/{running['id']}")


async def test_openapi_documents_the_public_routes(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {
        "/api/v1/generate",
        "/api/v1/tasks/{task_id}",
        "/api/v1/tasks/{task_id}/outputs/{index}",
        "/api/v1/tasks/{task_id}/events",
    } <= set(paths)


async def test_the_task_log_has_service_and_comfyui_lines_in_time_order(
    api: httpx.AsyncClient,
) -> None:
    task = await submit(api, graphs.txt2img(f"log-{fresh()}", steps=5))
    await wait_until_finished(api, task["id"])

    async def timeline() -> list[dict[str, str]] | None:
        response = await api.get(f"/api/v1/tasks/{task['id']}/logs", params={"format": "json"})
        records: list[dict[str, str]] = response.json()
        messages = {(r.get("source"), r["message"].split(" in ")[0]) for r in records}
        complete = {("comfyui", "Prompt executed"), (None, "task finished")} <= messages
        return records if complete else None

    records = await wait_for_condition(timeline, what="full timeline")
    assert all(r["task_id"] == task["id"] for r in records)
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
    assert {r.get("source") for r in records} == {None, "comfyui"}
    assert {r["service"] for r in records} == {"service"}
    text = (await api.get(f"/api/v1/tasks/{task['id']}/logs")).text
    assert "service/node-a [comfyui] Prompt executed" in text
    assert "task submitted to comfyui" in text
    assert (await api.get("/api/v1/tasks/nope/logs")).status_code == 404


async def test_each_request_has_an_id_that_reaches_its_log_lines(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/generate",
        json={"prompt": graphs.solid_image(f"rid-{fresh()}")},
        headers={"X-Request-ID": "req-42"},
    )
    assert response.headers["x-request-id"] == "req-42"
    assert len((await api.get("/healthz")).headers["x-request-id"]) == 32

    async def submitted_line() -> list[dict[str, str]] | None:
        path = f"/api/v1/tasks/{response.json()['id']}/logs?format=json"
        records: list[dict[str, str]] = (await api.get(path)).json()
        return [r for r in records if r["message"] == "task submitted to comfyui"] or None

    [record] = await wait_for_condition(submitted_line, what="submit logged")
    assert record["request_id"] == "req-42"
