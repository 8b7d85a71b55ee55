"""``--submit-replicas``: a submit is answered once Redis replicas hold its task; when they do
not confirm in time the answer is 503 ``not_replicated``, and a retry (same task id or
Idempotency-Key) finds the task, never queues a second one."""

import httpx
import pytest

from comfy_testkit import graphs
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.stack import AUTH_HEADERS

UNREPLICATED = ["--submit-replicas", "1", "--submit-replication-timeout-ms", "20"]
"""The session's Redis has no replica: no submit is ever confirmed."""


@pytest.fixture
async def api(start_balancer: BalancerFactory) -> httpx.AsyncClient:
    balancer = start_balancer(extra_args=UNREPLICATED)
    return httpx.AsyncClient(base_url=balancer.url, headers=AUTH_HEADERS, timeout=15)


async def test_an_unconfirmed_submit_answers_503_and_its_retry_finds_the_task(
    api: httpx.AsyncClient,
) -> None:
    body = {"prompt": graphs.txt2img("r"), "task_id": "replicated-1"}
    async with api:
        first = await api.post("/api/v1/generate", json=body)
        retry = await api.post("/api/v1/generate", json=body)
        task = await api.get("/api/v1/tasks/replicated-1")

    assert first.status_code == 503, first.text
    assert first.json()["code"] == "not_replicated"
    assert first.headers["Retry-After"] == "5"
    assert retry.status_code == 200  # found: it is in Redis as it is answered
    assert task.json()["status"] == "queued"


async def test_an_idempotency_key_stays_bound_to_the_unconfirmed_task(
    api: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "once"}
    body = {"prompt": graphs.txt2img("r")}
    async with api:
        first = await api.post("/api/v1/generate", json=body, headers=headers)
        retry = await api.post("/api/v1/generate", json=body, headers=headers)
        listed = await api.get("/api/v1/tasks")

    assert (first.status_code, retry.status_code) == (503, 200)
    assert len(listed.json()["tasks"]) == 1
    assert listed.json()["tasks"][0]["id"] == retry.json()["id"]
