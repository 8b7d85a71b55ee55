"""Usage reports: the range of days asked for (a table, no Redis), then tenants' tasks run
through a real balancer, each tenant seeing its own usage and an admin everyone's, adding up
to what the tasks' records say."""

import asyncio
import itertools
import sys
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest

from comfy_balancer.usage import DayRange, InvalidUsageRange, usage_range
from comfy_shared.clock import utc_now
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.api_keys import KeyClients
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import ADMIN_KEY

TODAY = date(2026, 3, 9)


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, DayRange(date(2026, 3, 1), TODAY)),
        ("2026-02-20", None, DayRange(date(2026, 2, 20), TODAY)),
        (None, "2026-01-15", DayRange(date(2026, 1, 1), date(2026, 1, 15))),  # until's month
        ("2026-03-09", "2026-03-09", DayRange(TODAY, TODAY)),
        ("2025-02-03", "2026-03-09", DayRange(date(2025, 2, 3), TODAY)),  # 400 days
    ],
)
def test_a_report_covers_the_days_asked_for_by_default_this_month(
    since: str | None, until: str | None, expected: DayRange
) -> None:
    assert usage_range(since, until, TODAY) == expected


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-03-10", "2026-03-09"),  # reversed
        ("2025-02-02", "2026-03-09"),  # 401 days
        ("2026-02-30", None),
        ("2026-3-1", None),
        ("2026-03-09T00:00", None),
        (None, "٢٠٢٦-03-09"),  # digits of another script
    ],
)
def test_a_range_that_is_no_range_of_days_is_refused(since: str | None, until: str | None) -> None:
    with pytest.raises(InvalidUsageRange):
        usage_range(since, until, TODAY)


def test_the_days_of_a_range() -> None:
    days = DayRange(date(2026, 2, 27), date(2026, 3, 2)).days()
    assert [day.isoformat() for day in days] == [
        "2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02",
    ]  # fmt: skip


# --- through a real balancer ---------------------------------------------------------------------

SEEDS = itertools.count(2000)


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a", "b"], step_time_s=0.02)


def a_graph() -> dict[str, Any]:
    """A new seed each time, so ComfyUI's cache cannot skip the sampler."""
    return graphs.txt2img(f"usage-{uuid.uuid4().hex[:8]}", steps=5, seed=next(SEEDS))


async def run_tasks(
    client: httpx.AsyncClient, bodies: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    accepted = [await client.post("/api/v1/generate", json=body) for body in bodies]
    assert all(response.status_code == 202 for response in accepted)
    return list(
        await asyncio.gather(
            *(wait_until_finished(client, response.json()["id"]) for response in accepted)
        )
    )


def expected_usage(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the tasks' own records say they used: each attempt's start to its end."""
    by_status = {"succeeded": 0, "failed": 0, "cancelled": 0}
    by_workflow: dict[str, float] = {}
    by_node: dict[str, float] = {}
    for task in tasks:
        by_status[task["status"]] += 1
        for attempt in task["attempt_log"]:
            if attempt["started_at"] is None:
                continue
            ran = round(seconds(attempt["ended_at"]) - seconds(attempt["started_at"]), 3)
            by_node[attempt["node_id"]] = by_node.get(attempt["node_id"], 0) + ran
            workflow = task["workflow"] or "graph"
            by_workflow[workflow] = by_workflow.get(workflow, 0) + ran
    return {"tasks": by_status, "by_workflow": by_workflow, "by_node": by_node}


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def assert_usage_is(report: dict[str, Any], expected: dict[str, Any]) -> None:
    assert report["tasks"] == expected["tasks"]
    for field, amounts in (("gpu_s_by_workflow", "by_workflow"), ("gpu_s_by_node", "by_node")):
        assert report[field].keys() == expected[amounts].keys()
        for name, amount in expected[amounts].items():
            assert report[field][name] == pytest.approx(amount, abs=0.002), (field, name)
    assert report["gpu_s"] == pytest.approx(sum(expected["by_node"].values()), abs=0.002)
    assert report["gpu_s"] > 0


async def test_each_tenant_sees_its_own_usage_and_an_admin_everyone_s(cluster: Cluster) -> None:
    since = (utc_now() - timedelta(days=1)).date().isoformat()  # a run across midnight counts
    async with KeyClients(cluster) as keys:
        ann = await keys.make("ann-key", tenant="ann")
        bo = await keys.make("bo-key", tenant="bo")
        ann_tasks = await run_tasks(
            ann, [{"prompt": a_graph()}, {"prompt": a_graph()}, {"workflow": "demo"}]
        )
        bo_tasks = await run_tasks(
            bo, [{"prompt": a_graph()}, {"prompt": graphs.runtime_error("e")}]
        )
        assert [t["status"] for t in bo_tasks] == ["succeeded", "failed"]
        cancelled = await submit(bo, a_graph())
        assert (await bo.delete(f"/api/v1/tasks/{cancelled['id']}")).status_code == 200
        bo_tasks.append(await wait_until_finished(bo, cancelled["id"]))

        own = (await ann.get("/api/v1/usage", params={"since": since})).json()
        refused = await ann.get("/api/v1/usage", params={"tenant": "bo"})
        everyone = (await cluster.api.get("/api/v1/usage", params={"since": since})).json()
        just_bo = (await cluster.api.get("/api/v1/usage", params={"tenant": "bo"})).json()

    assert [tenant["tenant"] for tenant in own["tenants"]] == ["ann"]
    assert_usage_is(own["tenants"][0]["totals"], expected_usage(ann_tasks))
    assert own["tenants"][0]["days"][-1]["day"] == utc_now().date().isoformat()
    assert (refused.status_code, refused.json()["code"]) == (403, "tenant_not_allowed")
    assert [tenant["tenant"] for tenant in everyone["tenants"]] == ["ann", "bo"]
    assert everyone["tenants"][0] == own["tenants"][0]
    assert_usage_is(everyone["tenants"][1]["totals"], expected_usage(bo_tasks))
    assert [tenant["tenant"] for tenant in just_bo["tenants"]] == ["bo"]


async def test_a_tenant_with_no_usage_gets_an_empty_report_and_bad_ranges_get_422(
    cluster: Cluster,
) -> None:
    async with KeyClients(cluster) as keys:
        idle = await keys.make("idle")
        report = await idle.get("/api/v1/usage", params={"until": "2026-02-10"})
        reversed_ = await idle.get(
            "/api/v1/usage", params={"since": "2026-02-10", "until": "2026-02-09"}
        )
        not_a_day = await idle.get("/api/v1/usage", params={"since": "2026-02-30"})
        malformed = await idle.get("/api/v1/usage", params={"since": "yesterday"})

    assert report.json() == {
        "since": "2026-02-01",
        "until": "2026-02-10",
        "tenants": [{"tenant": "idle", "totals": {
            "tasks": {"succeeded": 0, "failed": 0, "cancelled": 0},
            "gpu_s": 0.0, "gpu_s_by_workflow": {}, "gpu_s_by_node": {},
        }, "days": []}],
    }  # fmt: skip
    for response in (reversed_, not_a_day):
        assert (response.status_code, response.json()["code"]) == (422, "invalid_range")
    assert (malformed.status_code, malformed.json()["code"]) == (422, "invalid_request")


async def test_the_command_line_shows_the_usage_as_a_table(cluster: Cluster) -> None:
    async with KeyClients(cluster) as keys:
        ann = await keys.make("ann-cli", tenant="ann")
        [task] = await run_tasks(ann, [{"prompt": a_graph()}])

    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfy_stack", "usage", "--url", cluster.balancer.url,
        "--key", ADMIN_KEY, "--tenant", "ann",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(command.communicate(), timeout=30)

    assert command.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[1].split()[:6] == ["tenant", "day", "succeeded", "failed", "cancelled", "gpu-s"]
    total = next(line for line in lines if line.split()[:2] == ["ann", "total"]).split()
    assert total[2:5] == ["1", "0", "0"]
    assert f"{task['node_id']}=" in total[-1]
