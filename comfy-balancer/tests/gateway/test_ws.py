"""The gateway's WebSocket (``/ws``, ``/api/ws``) end to end: real balancer, services and
emulated ComfyUIs, real WebSocket clients over loopback.

Gateway prompts are created with ``comfy_testkit.gateway_ws.submit_prompt`` (a task with its
``PromptOrigin``, as ``POST /prompt`` creates it) until that route is there to call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_shared.stream_hub import stream_order
from comfy_testkit.captures import load_ws_transcripts
from comfy_testkit.cluster import Cluster
from comfy_testkit.gateway_ws import ComfyWsClient, closes, submit_prompt
from comfy_testkit.stack import ADMIN_KEY

TRANSCRIPTS = load_ws_transcripts()
KEYS = RedisKeys()
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def clients() -> AsyncIterator[list[ComfyWsClient]]:
    opened: list[ComfyWsClient] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
def one_node(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(["a"])


async def open_client(opened: list[ComfyWsClient], url: str, **kwargs: Any) -> ComfyWsClient:
    client = await ComfyWsClient.open(url, **{"headers": ADMIN, **kwargs})
    opened.append(client)
    await client.wait_for(lambda c: len(c.messages()) >= 1, what="greeting")
    return client


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [str(message["type"]) for message in messages]


async def terminal_event_ms(redis: Redis, task_id: str) -> int:
    """When the task's record turned terminal, by the Redis id of that stream entry."""
    entries = cast(
        "list[tuple[str, dict[str, str]]]", await redis.xrange(KEYS.task_events(task_id))
    )
    for entry_id, fields in entries:
        if json.loads(fields["event"])["task"]["status"] in ("succeeded", "failed", "cancelled"):
            return stream_order(entry_id)[0]
    raise AssertionError(f"{task_id} has not ended")


@pytest.mark.parametrize("transcript", ["success", "execution_error"])
async def test_a_prompt_s_messages_are_those_of_a_real_comfyui_and_end_after_its_record(
    one_node: Cluster, redis: Redis, clients: list[ComfyWsClient], transcript: str
) -> None:
    recorded = TRANSCRIPTS[transcript]
    client = await open_client(clients, one_node.balancer.url, client_id="script-1")
    await one_node.nodes_ready(1)

    task_id = await submit_prompt(redis, recorded["workflow"], tenant="admin", client_id=client.sid)
    await client.wait_prompt_closed(task_id)
    closed_at_ms = next(r.at for r in client.received if r.message == closes(task_id)) * 1000

    got = [m for m in client.messages() if m["type"] != "feature_flags"]
    assert types(got) == types(recorded["messages"])  # the recording's client sent no flags
    assert got[0] == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "script-1"},
    }
    statuses = [m["data"] for m in got[1:] if m["type"] == "status"]
    assert statuses == [{"status": {"exec_info": {"queue_remaining": n}}} for n in (1, 1, 0)]
    per_prompt = [m for m in got if m["type"] != "status"]
    assert all(m["data"]["prompt_id"] == task_id for m in per_prompt)
    assert got[-1] == closes(task_id)
    record = (await one_node.api.get(f"/api/v1/tasks/{task_id}")).json()
    assert record["status"] == ("succeeded" if transcript == "success" else "failed")
    assert closed_at_ms >= await terminal_event_ms(redis, task_id)
