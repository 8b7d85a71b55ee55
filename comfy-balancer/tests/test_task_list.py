"""``GET /api/v1/tasks`` with filters and pages, through a real balancer process over a real
Redis; the tasks are stored through the task store (the code path a submit takes), so a test
can choose their tenants, nodes, workflows, statuses and creation times."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from comfy_shared.models import TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import RunningComponent

START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)

TASKS = [  # id, tenant, status, node, workflow; one second apart, oldest first
    ("t00", "ann", "succeeded", "gpu-1", "demo"),
    ("t01", "bo", "failed", "gpu-2", None),
    ("t02", "ann", "succeeded", "gpu-2", None),
    ("t03", "ann", "running", "gpu-1", "demo"),
    ("t04", "bo", "succeeded", "gpu-1", "demo"),
    ("t05", "ann", "queued", None, "demo"),
    ("t06", "bo", "cancelled", None, None),
    ("t07", "ann", "failed", "gpu-1", None),
]


@pytest.fixture
async def cluster(start_balancer: Callable[..., RunningComponent]) -> AsyncIterator[Cluster]:
    """A balancer with no node: the listing needs none, and nothing then changes the tasks."""
    balancer = start_balancer()
    async with httpx.AsyncClient(
        base_url=balancer.url, headers=balancer.auth_headers, timeout=15
    ) as api:
        yield Cluster(balancer, [], api)


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, RedisKeys())


async def seed(store: TaskStore, task_id: str, second: float, **fields: Any) -> None:
    created_at = START + timedelta(seconds=second)
    record = TaskRecord.model_validate({"id": task_id, "created_at": created_at, **fields})
    await store.create(record)


@pytest.fixture
async def seeded(store: TaskStore) -> None:
    for second, (task_id, tenant, status, node, workflow) in enumerate(TASKS):
        fields = {"tenant": tenant, "status": status, "node_id": node, "workflow": workflow}
        await seed(store, task_id, second, **fields)


def newest_first(keep: Callable[[tuple[str, str, str, str | None, str | None]], bool]) -> list[str]:
    return [task[0] for task in reversed(TASKS) if keep(task)]


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/api/v1/tasks", params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    return [task["id"] for task in page["tasks"]]


def moment(second: float) -> str:
    return (START + timedelta(seconds=second)).isoformat()


@pytest.mark.usefixtures("seeded")
async def test_each_filter_and_their_combinations(cluster: Cluster) -> None:
    api = cluster.api

    assert await listed(api) == newest_first(lambda t: True)
    assert await listed(api, status="succeeded") == ["t04", "t02", "t00"]
    assert await listed(api, status=["failed", "cancelled"]) == ["t07", "t06", "t01"]
    assert await listed(api, tenant="bo") == ["t06", "t04", "t01"]
    assert await listed(api, node="gpu-1") == newest_first(lambda t: t[3] == "gpu-1")
    assert await listed(api, workflow="demo") == ["t05", "t04", "t03", "t00"]
    assert await listed(api, since=moment(2), until=moment(5)) == ["t04", "t03", "t02"]
    naive_utc = (START + timedelta(seconds=6)).replace(tzinfo=None).isoformat()
    assert await listed(api, since=naive_utc) == ["t07", "t06"]
    assert await listed(api, until=moment(-1)) == []
    assert await listed(api, tenant="ann", node="gpu-1", workflow="demo") == ["t03", "t00"]
    assert await listed(api, tenant="ann", status="succeeded", since=moment(1)) == ["t02"]
    assert await listed(api, node="gpu-2", status="failed", tenant="bo") == ["t01"]
    assert await listed(api, workflow="nothing-of-that-name") == []


@pytest.mark.usefixtures("seeded")
async def test_a_key_lists_its_own_tenant_only_and_an_admin_any(cluster: Cluster) -> None:
    async with KeyClients(cluster) as keys:
        ann = await keys.make("ann-reader", tenant="ann", scopes=["read"])
        own = await listed(ann)
        named = await listed(ann, tenant="ann", status="succeeded")
        other = await ann.get("/api/v1/tasks", params={"tenant": "bo"})

    assert own == newest_first(lambda t: t[1] == "ann")
    assert named == ["t02", "t00"]
    assert (other.status_code, other.json()["code"]) == (403, "tenant_not_allowed")
    assert await listed(cluster.api, tenant="bo", status="succeeded") == ["t04"]


async def test_pages_neither_repeat_nor_skip_while_tasks_arrive(
    cluster: Cluster, store: TaskStore
) -> None:
    for n in range(12):  # three tasks in each second, half of them failed
        status = "failed" if n % 2 else "succeeded"
        await seed(store, f"p{n:02d}", n // 3, status=status, node_id="gpu-1")
    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "status": "failed"} | (
            {"cursor": cursor} if cursor else {}
        )
        page = (await cluster.api.get("/api/v1/tasks", params=params)).json()
        pages.append([task["id"] for task in page["tasks"]])
        # newer than every page, and one in the same second as the first page's tasks
        await seed(store, f"new{len(pages)}", 60, status="failed")
        await seed(store, f"p{len(pages)}-same-second", 3, status="failed")
        cursor = page["next_cursor"]
        if cursor is None:
            break

    # the last failed task is not the last task: one more page finds nothing after it
    assert pages == [["p11", "p09"], ["p07", "p05"], ["p03", "p01"], []]


async def test_an_offset_cursor_of_an_earlier_version_is_still_taken(
    cluster: Cluster, store: TaskStore
) -> None:
    for n in range(4):
        await seed(store, f"o{n}", n)

    page = (await cluster.api.get("/api/v1/tasks", params={"limit": 2, "cursor": "1"})).json()
    rest = await listed(cluster.api, cursor=page["next_cursor"])

    assert [task["id"] for task in page["tasks"]] == ["o2", "o1"]
    assert rest == ["o0"]


BAD_PARAMS: list[dict[str, Any]] = [
    {"status": "lost"},
    {"status": ["failed"] * 7},
    {"tenant": "../other"},
    {"tenant": "x" * 65},
    {"node": "gpu 1"},
    {"node": "n" * 65},
    {"workflow": ""},
    {"workflow": "w" * 129},
    {"workflow": "demo\n"},
    {"since": "yesterday"},
    {"since": "1700000000"},
    {"until": "0.5"},
    {"until": "2026-02-30T00:00:00Z"},
    {"cursor": "abc"},
    {"cursor": "12:two:parts"},
    {"cursor": "1" * 16 + ":t1"},
    {"cursor": "12:t1\n"},
    {"limit": 0},
    {"limit": 501},
]


async def test_a_bad_value_is_refused_in_the_error_shape(cluster: Cluster) -> None:
    answers = [
        (params, await cluster.api.get("/api/v1/tasks", params=params)) for params in BAD_PARAMS
    ]

    wrong = [
        (params, response.status_code, response.text)
        for params, response in answers
        if (response.status_code, response.json().get("code")) != (422, "invalid_request")
    ]
    assert wrong == []


async def test_a_task_of_each_status_is_found_by_it(cluster: Cluster, store: TaskStore) -> None:
    for second, status in enumerate(TaskStatus):
        await seed(store, f"s-{status.value}", second, status=status)

    for status in TaskStatus:
        assert await listed(cluster.api, status=status.value) == [f"s-{status.value}"]
