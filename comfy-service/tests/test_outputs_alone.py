"""A service used on its own keeps its outputs in bounds too: its own retention sweep."""

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
