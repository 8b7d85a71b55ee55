"""Webhooks end to end: real balancers and Redis, and a real HTTP receiver on loopback
(allow-listed), which answers as each test scripts it. Short retry schedules keep each test
within a few seconds.

One test runs a task on a node; the others end tasks in Redis through the task store, as a
node's service does (that write is what puts a webhook in the outbox), so they need no node."""

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from redis.asyncio import Redis

from comfy_shared.lifecycle import Cancelled
from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore
from comfy_stack.ports import free_port
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.api_keys import KeyClient, KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.plugin import BalancerFactory
from comfy_testkit.stack import AUTH_HEADERS
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()
DEPLOYMENT_SECRET = "whsec_" + base64.b64encode(b"deployment-secret-of-24b").decode()
DELAYS_S = ["0.4", "0.8", "1.6"]
"""Waits between attempts in these tests (so 4 attempts); each +-10%."""


def balancer_args(*delays_s: str, signed: bool = True) -> list[str]:
    """``signed``: with a deployment-wide secret (for tasks with no key of their own)."""
    args = ["--webhook-allow", "127.0.0.1/32", "--webhook-poll-s", "0.05"]
    args += ["--webhook-secret", DEPLOYMENT_SECRET] if signed else []
    for delay in delays_s or DELAYS_S:
        args += ["--webhook-retry-delays-s", delay]
    return args


def verify_standard_webhook(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """The receiver's check, as the Standard Webhooks specification describes it."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(value, expected)
        for version, _, value in (s.partition(",") for s in headers["webhook-signature"].split())
    )


@dataclass
class Delivery:
    at_s: float
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


@dataclass
class Receiver:
    """Answers each message's attempts from ``answers`` (by attempt; the last one repeats)."""

    port: int = field(default_factory=free_port)
    answers: list[int] = field(default_factory=lambda: [200])
    deliveries: list[Delivery] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = await request.read()
            message_id = request.headers["webhook-id"]
            earlier = sum(d.headers["webhook-id"] == message_id for d in self.deliveries)
            status = self.answers[min(earlier, len(self.answers) - 1)]
            await asyncio.sleep(0.05)  # long enough for a second sender to overlap, if any
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.deliveries.append(Delivery(time.monotonic(), headers, body, status))
            return web.Response(status=status)
        finally:
            self.in_flight -= 1

    def of(self, task_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.payload["data"]["id"] == task_id]

    def accepted(self, task_id: str) -> bool:
        return any(200 <= d.status < 300 for d in self.of(task_id))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    yield receiver
    await runner.cleanup()


@pytest.fixture
async def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS)


@pytest.fixture
async def api(start_balancer: BalancerFactory) -> AsyncIterator[Cluster]:
    """A balancer with no node (tasks wait in its queue) and no deployment-wide webhook
    secret, and the admin's client."""
    balancer = start_balancer(extra_args=balancer_args(signed=False))
    async with httpx.AsyncClient(base_url=balancer.url, timeout=15, headers=AUTH_HEADERS) as admin:
        yield Cluster(balancer, [], admin)


@pytest.fixture
async def keys(api: Cluster) -> AsyncIterator[KeyClients]:
    async with KeyClients(api) as clients:
        yield clients


async def wait_delivered(receiver: Receiver, task_id: str, timeout_s: float = 10) -> None:
    async def delivered() -> bool:
        return receiver.accepted(task_id)

    await wait_for_condition(delivered, timeout_s=timeout_s, what=f"webhook of {task_id}")


async def end_task(store: TaskStore, task_id: str, url: str, key: KeyClient | None = None) -> None:
    """A task ends as a node would end it (here: cancelled), with a webhook."""
    owner = {"tenant": key.key["tenant"], "key_id": key.key["id"]} if key else {}
    await store.create(TaskRecord(id=task_id, webhook_url=url, **owner))
    await store.apply(task_id, Cancelled())


async def test_a_failing_receiver_gets_retries_at_growing_waits_then_one_signed_delivery(
    make_cluster: Callable[..., Cluster], receiver: Receiver, redis: Redis
) -> None:
    cluster = make_cluster(["a"], balancer_args=balancer_args())
    receiver.answers = [500, 503, 200]
    async with KeyClients(cluster) as clients:
        alice = await clients.make("alice")
        task = await submit(alice, graphs.txt2img("wh"), webhook_url=receiver.url)
        await wait_delivered(receiver, task["id"])
        ended = await wait_until_finished(alice, task["id"])

    deliveries = receiver.of(task["id"])
    assert [d.status for d in deliveries] == [500, 503, 200]
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1  # one message, three tries
    waits = [b.at_s - a.at_s for a, b in itertools.pairwise(deliveries)]
    assert 0.4 * 0.9 <= waits[0] < waits[1]  # 0.4 s, then 0.8 s (+-10%)
    secret = alice.key["webhook_secret"]
    assert all(verify_standard_webhook(secret, d.headers, d.body) for d in deliveries)
    assert not verify_standard_webhook(DEPLOYMENT_SECRET, deliveries[0].headers, deliveries[0].body)
    assert abs(int(deliveries[-1].headers["webhook-timestamp"]) - time.time()) < 30
    payload = deliveries[-1].payload
    assert payload["type"] == "task.succeeded"
    assert payload["data"] == {**ended, "queue_position": None, "eta": None}
    assert "prompt" not in payload["data"]
    assert await redis.zcard(KEYS.webhook_outbox()) == 0  # delivered: gone from the outbox


async def test_two_replicas_deliver_each_task_end_once(
    start_balancer: BalancerFactory, receiver: Receiver, store: TaskStore
) -> None:
    for name in ("balancer-1", "balancer-2"):
        start_balancer(name, extra_args=balancer_args("0.3"))
    receiver.answers = [500, 200]  # every message needs a second attempt
    task_ids = [f"pair-{n}" for n in range(8)]

    for task_id in task_ids:
        await end_task(store, task_id, receiver.url)
    for task_id in task_ids:
        await wait_delivered(receiver, task_id)
    await asyncio.sleep(0.5)  # a second delivery, if any, would have come by now

    for task_id in task_ids:
        deliveries = receiver.of(task_id)
        assert [d.status for d in deliveries] == [500, 200]
        assert all(
            verify_standard_webhook(DEPLOYMENT_SECRET, d.headers, d.body) for d in deliveries
        )
    assert len(receiver.deliveries) == 2 * len(task_ids)


async def test_after_the_last_attempt_a_dead_letter_its_tenant_sees_and_can_retry(
    api: Cluster, keys: KeyClients, receiver: Receiver, store: TaskStore
) -> None:
    receiver.answers = [500]
    alice, bob = await keys.make("alice"), await keys.make("bob")
    await end_task(store, "dead-1", receiver.url, alice)

    async def dead_letters() -> list[dict[str, Any]]:
        answer = await alice.get("/api/v1/webhooks/dead")
        assert answer.status_code == 200, answer.text
        letters: list[dict[str, Any]] = answer.json()
        return letters

    letters = await wait_for_condition(dead_letters, timeout_s=10, what="a dead letter")
    deliveries = receiver.of("dead-1")
    assert len(deliveries) == 4  # the first attempt and 3 retries
    secret = alice.key["webhook_secret"]
    assert all(verify_standard_webhook(secret, d.headers, d.body) for d in deliveries)
    assert [(d["task_id"], d["attempts"], d["last_error"], d["type"]) for d in letters] == [
        ("dead-1", 4, "attempt 4 answered 500; no attempt left", "task.cancelled")
    ]
    assert letters[0]["message_id"] == deliveries[0].headers["webhook-id"]
    assert (await bob.get("/api/v1/webhooks/dead")).json() == []
    admin_view = (await api.api.get("/api/v1/webhooks/dead")).json()
    assert [letter["task_id"] for letter in admin_view] == ["dead-1"]  # the admin sees all
    refused = await bob.post("/api/v1/webhooks/dead/dead-1/retry")
    assert (refused.status_code, refused.json()["code"]) == (404, "dead_letter_not_found")

    receiver.answers = [200]
    retried = await alice.post("/api/v1/webhooks/dead/dead-1/retry")
    assert retried.status_code == 200, retried.text
    await wait_delivered(receiver, "dead-1")
    assert await dead_letters() == []
    assert {d.headers["webhook-id"] for d in receiver.of("dead-1")} == {letters[0]["message_id"]}
    again = await alice.post("/api/v1/webhooks/dead/dead-1/retry")
    assert (again.status_code, again.json()["code"]) == (404, "dead_letter_not_found")


async def test_a_balancer_restarted_during_the_backoff_still_delivers(
    start_balancer: BalancerFactory, receiver: Receiver, store: TaskStore, redis: Redis
) -> None:
    first_balancer = start_balancer(extra_args=balancer_args("3.0"))
    receiver.answers = [500, 200]
    await end_task(store, "restart-1", receiver.url)

    async def first_attempt_recorded() -> bool:
        # The receiver sees the attempt before the balancer records its outcome; killed in
        # between, the attempt would wait out its lease instead of the backoff tested here.
        recorded = await redis.hexists(KEYS.webhook("restart-1"), "last_attempt_ms")
        return bool(recorded) and len(receiver.of("restart-1")) == 1

    await wait_for_condition(first_attempt_recorded, timeout_s=10, what="the first attempt")
    first_balancer.kill()
    start_balancer("balancer-2", extra_args=balancer_args("3.0"))

    await wait_delivered(receiver, "restart-1", timeout_s=20)  # a loaded machine starts slowly
    first, second = receiver.of("restart-1")
    # The schedule held across the restart: 3 s less at most the 10 % jitter (and a rounding).
    assert second.at_s - first.at_s >= 3.0 * 0.9 - 0.01
    assert second.headers["webhook-id"] == first.headers["webhook-id"]


async def test_gone_stops_at_once_and_an_address_refused_at_delivery_is_never_called(
    keys: KeyClients, receiver: Receiver, store: TaskStore, redis: Redis
) -> None:
    """The second task's URL leads somewhere refused (written here around the submit check,
    as a DNS answer changed since could): every attempt is refused unsent, then it is dead."""
    receiver.answers = [410]
    dan = await keys.make("dan")
    await end_task(store, "gone-1", receiver.url, dan)
    await end_task(store, "inside-1", "https://10.1.2.3/hook", dan)

    async def both_dead() -> bool:
        return await redis.zcard(KEYS.webhook_dead()) == 2

    await wait_for_condition(both_dead, timeout_s=10, what="two dead letters")
    deliveries = receiver.deliveries
    assert [(d.status, d.payload["data"]["id"]) for d in deliveries] == [(410, "gone-1")]
    assert deliveries[0].payload["type"] == "task.cancelled"
    assert verify_standard_webhook(
        dan.key["webhook_secret"], deliveries[0].headers, deliveries[0].body
    )
    assert "410 Gone" in str(await redis.hget(KEYS.webhook("gone-1"), "last_error"))
    inside = await redis.hgetall(KEYS.webhook("inside-1"))
    assert inside["attempts"] == "4"
    assert "10.1.2.3, which is private" in inside["last_error"]


REFUSED_AT_SUBMIT = [
    ("https://10.0.0.1/hook", "invalid_webhook_url"),
    ("https://169.254.169.254/latest/meta-data", "invalid_webhook_url"),
    ("https://[::1]/hook", "invalid_webhook_url"),
    ("https://[fe80::1]/hook", "invalid_webhook_url"),
    ("https://user:pw@example.com/hook", "invalid_webhook_url"),
    ("http://example.com/hook", "invalid_webhook_url"),  # http: allow-listed hosts only
    ("/relative", "invalid_webhook_url"),
    ("https://example.com/" + "a" * 2048, "invalid_request"),
]


async def test_submit_checks_the_url_and_a_key_has_a_default_webhook_and_a_new_secret(
    api: Cluster, keys: KeyClients, receiver: Receiver
) -> None:
    for webhook_url, code in REFUSED_AT_SUBMIT:
        body = {"prompt": graphs.txt2img("x"), "webhook_url": webhook_url}
        answer = await api.api.post("/api/v1/generate", json=body)
        assert (answer.status_code, answer.json()["code"]) == (422, code), webhook_url
    unsigned = await api.api.post(
        "/api/v1/generate", json={"prompt": graphs.txt2img("x"), "webhook_url": receiver.url}
    )  # the admin key has no record, so no secret of its own, and the balancer has none
    assert (unsigned.status_code, unsigned.json()["code"]) == (422, "webhook_unsigned")

    carol = await keys.make("carol", webhook_url=receiver.url)
    listed = (await api.api.get("/api/v1/keys")).json()
    assert all("webhook_secret" not in key for key in listed)
    assert [(k["webhook_url"], k["signs_webhooks"]) for k in listed if k["name"] == "carol"] == [
        (receiver.url, True)
    ]
    renewed = await api.api.patch(
        f"/api/v1/keys/{carol.key['id']}", json={"new_webhook_secret": True}
    )
    assert renewed.status_code == 200, renewed.text
    new_secret = renewed.json()["webhook_secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != carol.key["webhook_secret"]

    task = await submit(carol, graphs.txt2img("default"))  # waits: the balancer has no node
    assert (await carol.delete(f"/api/v1/tasks/{task['id']}")).status_code == 200
    await wait_delivered(receiver, task["id"])
    delivery = receiver.of(task["id"])[0]
    assert delivery.payload["type"] == "task.cancelled"
    assert verify_standard_webhook(new_secret, delivery.headers, delivery.body)

    cleared = await api.api.patch(f"/api/v1/keys/{carol.key['id']}", json={"webhook_url": None})
    assert cleared.json()["webhook_url"] is None
    bad = await api.api.patch(
        f"/api/v1/keys/{carol.key['id']}", json={"webhook_url": "https://192.168.1.1/"}
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_webhook_url")
    missing = await api.api.post("/api/v1/webhooks/dead/no-such-task/retry")
    assert (missing.status_code, missing.json()["code"]) == (404, "dead_letter_not_found")
