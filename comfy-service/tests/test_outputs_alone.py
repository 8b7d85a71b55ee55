"""A service used on its own serves its outputs as the balancer does (texts a node reported
included), and keeps them in bounds too: its own retention sweep."""

import hashlib
import uuid

import httpx

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.plugin import ServiceFactory
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition


async def test_a_service_alone_serves_stored_outputs_and_expires_them(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    service = start_service(emulator.url, extra_args=["--outputs-sweep-interval-s", "0.2"])
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as api:
        task = await submit(api, graphs.solid_image(uuid.uuid4().hex[:8]), output_ttl_s=2)
        done = await wait_until_finished(api, task["id"])
        url = done["outputs"][0]["url"]
        served = await api.get(url)
        assert served.status_code == 200, served.text
        assert served.headers["etag"] == f'"{done["outputs"][0]["sha256"]}"'

        async def expired() -> httpx.Response | None:
            answer = await api.get(url)
            return answer if answer.status_code == 410 else None

        gone = await wait_for_condition(expired, timeout_s=15, what="the output's TTL to end")
    assert gone.json()["code"] == "output_expired"


TEXT = "a lighthouse at dusk, ünïcode ✓\nsecond line"
PLAIN_TEXT = "text/plain; charset=utf-8"


async def test_a_service_alone_stores_and_serves_a_text_without_asking_comfyui(
    start_service: ServiceFactory, emulator: RunningComponent
) -> None:
    service = start_service(emulator.url)
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as api:
        prefix = uuid.uuid4().hex[:8]
        task = await submit(api, graphs.solid_image_with_text(prefix, TEXT))
        done = await wait_until_finished(api, task["id"])
        failed = await submit(api, graphs.text_then_runtime_error(prefix, TEXT))
        failed_done = await wait_until_finished(api, failed["id"])
        listed = (await api.get(f"/api/v1/tasks/{task['id']}/outputs")).json()
        stored = await api.get(listed[0]["url"])
        unstored = await api.get(failed_done["outputs"][0]["url"])  # from the record

    encoded = TEXT.encode()
    assert done["status"] == "succeeded", done
    assert [(o["kind"], o["filename"], o["media_type"]) for o in listed] == [
        ("text", "5-text-0.txt", PLAIN_TEXT),
        ("image", f"{prefix}_00001_.png", "image/png"),
    ]
    assert (listed[0]["size"], listed[0]["sha256"]) == (
        len(encoded),
        hashlib.sha256(encoded).hexdigest(),
    )
    assert (stored.status_code, stored.headers["content-type"]) == (200, PLAIN_TEXT)
    assert stored.content == encoded
    assert failed_done["status"] == "failed", failed_done
    assert failed_done["outputs"][0]["sha256"] is None
    assert (unstored.status_code, unstored.headers["content-type"]) == (200, PLAIN_TEXT)
    assert unstored.content == encoded
