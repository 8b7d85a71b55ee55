import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import cast

import pytest
from redis.asyncio import Redis

from comfy_shared import webhook_outbox
from comfy_shared.clock import now_ms
from comfy_shared.errors import InvalidTransition, TaskNotFound
from comfy_shared.lifecycle import Cancelled, Ended, Progressed, Refused, Started, TaskEvent
from comfy_shared.models import ErrorType, Progress, PromptOrigin, TaskError, TaskRecord
from comfy_shared.outputs.catalog import inputs_holder
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import FRAMES_KEPT_S, IdempotencyBinding, TaskStore
from comfy_shared.usage import USAGE_TTL_S
from comfy_shared.webhook_outbox import MESSAGE_TTL_S
from comfy_testkit.records import ATTEMPT, NODE, on_node, run, succeed

KEYS = RedisKeys("test")
RETENTION_S = 900
PNG = {"t1-image.png": "sha256:" + "ab" * 32}
"""An input file, as the task keeps it: a reference into the output store."""


@pytest.fixture
def store(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS, retention_s=RETENTION_S, events_maxlen=50)


def task_keys(task_id: str) -> list[str]:
    return [
        KEYS.task(task_id),
        KEYS.task_prompt(task_id),
        KEYS.task_events(task_id),
        KEYS.task_logs(task_id),
        KEYS.task_frames(task_id),
    ]


async def test_create_writes_record_graph_inputs_event_and_recent_index(
    store: TaskStore, redis: Redis
) -> None:
    record, created = await store.create(on_node("t1"), {"1": {"class_type": "X"}}, PNG)

    assert created
    assert await redis.hget(KEYS.task("t1"), "status") == "queued"
    assert await store.get_prompt("t1") == {"1": {"class_type": "X"}}
    assert await store.get_inputs("t1") == PNG
    assert await redis.xlen(KEYS.task_events("t1")) == 1
    assert await redis.zscore(KEYS.recent_tasks(), "t1") is not None
    assert await redis.ttl(KEYS.task("t1")) == -1  # active tasks never expire
    assert (await store.get("t1")).model_dump() == record.model_dump()


async def test_a_gateway_prompt_s_origin_lives_beside_the_task_and_ends_with_it(
    store: TaskStore, redis: Redis
) -> None:
    origin = PromptOrigin(client_id="tab-1", number=7, extra_data={"extra_pnginfo": {"w": 1}})
    await store.create(on_node("t1"), {"p": 1}, origin=origin)
    await store.create(on_node("t2"), {"p": 1})

    assert await store.get_origin("t1") == origin
    assert await store.get_origins(["t1", "t2"]) == {"t1": origin, "t2": None}
    assert "tab-1" not in (await redis.hget(KEYS.task("t1"), "record") or "")
    await run(store, "t1")
    await succeed(store, "t1")
    assert 0 < await redis.ttl(KEYS.task_origin("t1")) <= RETENTION_S


async def test_a_tenant_s_open_index_holds_its_unfinished_tasks_only(
    store: TaskStore, redis: Redis
) -> None:
    for task_id in ("t1", "t2", "t3"):
        await store.create(on_node(task_id, tenant="acme"), {"p": 1})
    await store.create(on_node("other"), {"p": 1})
    await run(store, "t2")
    await succeed(store, "t2")
    await store.apply("t3", Cancelled())

    assert await store.unfinished_ids("acme") == ["t1"]
    assert await store.count_unfinished("acme") == 1
    await store.delete(await store.get("t1"))
    assert await redis.exists(KEYS.tenant_unfinished("acme")) == 0


async def test_statuses_and_submissions_are_read_for_many_tasks_at_once(
    store: TaskStore,
) -> None:
    origin = PromptOrigin(client_id="tab-1", number=3)
    await store.create(on_node("t1"), {"p": 1}, origin=origin)
    await store.create(on_node("t2"), {"p": 2})

    assert await store.statuses(["t1", "gone"]) == {"t1": TaskStatus.QUEUED, "gone": None}
    assert await store.statuses([]) == {}
    assert await store.find_submissions([]) == {}
    found = await store.find_submissions(["t1", "t2", "gone"])
    first, second = found["t1"], found["t2"]
    assert first is not None
    assert second is not None
    assert (first.record.id, first.prompt, first.origin) == ("t1", {"p": 1}, origin)
    assert (second.prompt, second.origin, found["gone"]) == ({"p": 2}, None, None)


async def test_a_tenant_s_newest_tasks_are_listed_with_their_status_in_one_reply(
    store: TaskStore, redis: Redis
) -> None:
    for task_id in ("t1", "t2", "t3"):
        await store.create(on_node(task_id, tenant="acme"), {"p": 1})
    await run(store, "t2")
    await succeed(store, "t2")
    await redis.delete(KEYS.task("t3"))  # gone, though still listed

    listed = await store.recent_statuses("acme", 10)

    assert [(item.task_id, item.status) for item in listed] == [
        ("t3", None), ("t2", TaskStatus.SUCCEEDED), ("t1", TaskStatus.QUEUED),
    ]  # fmt: skip
    created = (await store.get("t1")).created_at
    assert listed[2].created_ms == int(created.timestamp() * 1000)
    assert [item.task_id for item in await store.recent_statuses("acme", 1)] == ["t3"]


async def test_prompt_numbers_increase(store: TaskStore) -> None:
    first = await store.next_prompt_number()
    assert await store.next_prompt_number() == first + 1


async def test_create_with_a_taken_id_returns_the_existing_task(store: TaskStore) -> None:
    first, _ = await store.create(TaskRecord(id="t1", client={"n": 1}))
    again, created = await store.create(TaskRecord(id="t1", client={"n": 2}))

    assert not created
    assert again.client == first.client == {"n": 1}


async def test_the_end_sets_retention_on_every_task_key_and_drops_the_inputs(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(on_node("t1"), {"p": 1}, PNG)
    await redis.rpush(KEYS.task_logs("t1"), "a line")
    await store.append_frames({"t1": [{"a": "1", "k": "m", "d": "{}"}]})
    await run(store, "t1")
    assert await redis.ttl(KEYS.task("t1")) == -1

    await succeed(store, "t1")

    for key in task_keys("t1"):
        assert 0 < await redis.ttl(key) <= RETENTION_S, key
    assert 0 < await redis.ttl(KEYS.task_frames("t1")) <= FRAMES_KEPT_S < RETENTION_S
    assert await redis.exists(KEYS.task_inputs("t1")) == 0


async def test_the_end_makes_the_hold_on_the_input_files_due(
    store: TaskStore, redis: Redis
) -> None:
    holder = inputs_holder("t1")
    far = now_ms() + 3_600_000
    await redis.zadd(KEYS.outputs_expiry(), {holder: far})  # what InputStash.keep holds
    await store.create(on_node("t1"), {"p": 1}, PNG)
    await run(store, "t1")
    assert await redis.zscore(KEYS.outputs_expiry(), holder) == far

    await succeed(store, "t1")

    due = await redis.zscore(KEYS.outputs_expiry(), holder)
    assert due is not None
    assert due <= now_ms()


async def test_the_end_of_a_task_without_input_files_holds_nothing(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(on_node("t1"))
    await run(store, "t1")
    await succeed(store, "t1")

    assert await redis.zcard(KEYS.outputs_expiry()) == 0


async def test_an_event_that_does_not_apply_changes_nothing(store: TaskStore, redis: Redis) -> None:
    await store.create(on_node("t1"))
    await store.apply("t1", Cancelled())

    with pytest.raises(Refused):
        await store.apply("t1", Started(ATTEMPT))

    assert (await store.get("t1")).status is TaskStatus.CANCELLED
    assert await redis.xlen(KEYS.task_events("t1")) == 2


async def test_an_illegal_status_change_is_refused_by_the_store_and_logged(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the lifecycle ever decide a change the state machine forbids, the store does
    not write it: the transition table is checked on every status write."""
    from comfy_shared import lifecycle

    await store.create(on_node("t1"))
    await succeed(store, "t1")

    def back_to_running(record: TaskRecord, event: TaskEvent) -> TaskRecord:
        return record.model_copy(update={"status": TaskStatus.RUNNING})

    monkeypatch.setattr(lifecycle, "apply", back_to_running)

    with pytest.raises(InvalidTransition):
        await store.apply("t1", Started(ATTEMPT))

    assert (await store.get("t1")).status is TaskStatus.SUCCEEDED


async def test_unknown_task_raises_not_found(store: TaskStore) -> None:
    assert await store.find("nope") is None
    with pytest.raises(TaskNotFound):
        await store.get("nope")
    with pytest.raises(TaskNotFound):
        await store.apply("nope", Started(ATTEMPT))


async def test_concurrent_ends_have_exactly_one_winner(store: TaskStore) -> None:
    await store.create(on_node("t1"))
    failure = TaskError(type=ErrorType.COMFYUI, message="boom")
    events: list[TaskEvent] = [Ended(ATTEMPT), Ended(ATTEMPT, error=failure), Cancelled()] * 4

    results = await asyncio.gather(
        *(store.apply("t1", event) for event in events), return_exceptions=True
    )

    winners = [r for r in results if isinstance(r, TaskRecord)]
    assert len(winners) == 1
    assert all(isinstance(r, Refused) for r in results if r not in winners)
    assert (await store.get("t1")).status is winners[0].status


async def test_concurrent_progress_reports_are_all_written(store: TaskStore, redis: Redis) -> None:
    await store.create(on_node("t1"))

    await asyncio.gather(
        *(store.apply("t1", Progressed(ATTEMPT, "3", step, 20)) for step in range(10))
    )

    assert await redis.hget(KEYS.task("t1"), "version") == "11"
    assert (await store.get("t1")).status is TaskStatus.RUNNING


async def test_events_carry_the_whole_task_and_resume_after_an_id(store: TaskStore) -> None:
    await store.create(on_node("t1"))
    await run(store, "t1")
    await store.apply("t1", Progressed(ATTEMPT, None, 3, 20))

    events = await store.read_events("t1")
    assert [e.kind for _, e in events] == ["state", "state", "progress"]
    assert [e.task.status for _, e in events] == ["queued", "running", "running"]
    assert events[-1][1].task.progress == Progress(value=3, max=20)

    later = await store.read_events("t1", after=events[0][0])
    assert [event_id for event_id, _ in later] == [event_id for event_id, _ in events[1:]]


async def test_read_events_blocks_until_the_next_event(store: TaskStore) -> None:
    await store.create(on_node("t1"))
    [(first_id, _)] = await store.read_events("t1")

    waiter = asyncio.create_task(store.read_events("t1", after=first_id, block_ms=5000))
    await asyncio.sleep(0)
    assert not waiter.done()
    await run(store, "t1")

    [(_, event)] = await asyncio.wait_for(waiter, timeout=5)
    assert event.task.status is TaskStatus.RUNNING


async def test_delete_forgets_every_key_of_the_task(store: TaskStore, redis: Redis) -> None:
    await store.create(on_node("t1"), {"p": 1}, PNG)
    await store.append_frames({"t1": [{"a": "1", "k": "m", "d": "{}"}]})
    await store.delete(on_node("t1"))

    assert await redis.exists(*task_keys("t1"), KEYS.task_inputs("t1")) == 0
    assert await redis.zscore(KEYS.recent_tasks(), "t1") is None
    assert await store.unfinished_ids("default") == []


async def frame_fields(redis: Redis, task_id: str) -> list[dict[str, str]]:
    entries = cast(
        "list[tuple[str, dict[str, str]]]", await redis.xrange(KEYS.task_frames(task_id))
    )
    return [fields for _, fields in entries]


async def test_a_tenant_s_unfinished_tasks_are_those_created_and_not_ended(
    store: TaskStore,
) -> None:
    for task_id, tenant in [("t1", "acme"), ("t2", "acme"), ("t3", "other")]:
        await store.create(on_node(task_id, tenant=tenant))
    assert await store.unfinished_ids("acme") == ["t1", "t2"]
    assert await store.count_unfinished("acme") == 2

    await run(store, "t1")
    assert await store.count_unfinished("acme") == 2  # running is not ended
    assert await store.count_unfinished_with("acme", "t1") == 2
    await succeed(store, "t1")
    assert await store.count_unfinished_with("acme", "t1") == 2  # counted as it started
    assert await store.count_unfinished("acme") == 1
    await store.apply("t2", Cancelled())

    assert await store.unfinished_ids("acme") == []
    assert await store.count_unfinished("other") == 1


async def test_frames_are_appended_in_order_capped_and_kept_after_their_last_append(
    store: TaskStore, redis: Redis
) -> None:
    await store.append_frames(
        {"t1": [{"a": "1", "n": str(n)} for n in range(300)], "t2": [{"a": "2", "n": "0"}]},
        maxlen=100,
    )

    kept = await frame_fields(redis, "t1")
    assert 100 <= len(kept) < 300  # MAXLEN ~ trims whole nodes of the stream
    assert [fields["n"] for fields in kept] == [str(n) for n in range(300)][-len(kept) :]
    assert await frame_fields(redis, "t2") == [{"a": "2", "n": "0"}]
    for task_id in ("t1", "t2"):
        assert 0 < await redis.ttl(KEYS.task_frames(task_id)) <= RETENTION_S


async def test_delete_makes_the_hold_on_the_input_files_due(store: TaskStore, redis: Redis) -> None:
    holder = inputs_holder("t1")
    await redis.zadd(KEYS.outputs_expiry(), {holder: now_ms() + 3_600_000})
    await store.create(on_node("t1"), {"p": 1}, PNG)

    await store.delete(on_node("t1"))

    due = await redis.zscore(KEYS.outputs_expiry(), holder)
    assert due is not None
    assert due <= now_ms()


async def test_an_attempt_is_claimed_once(store: TaskStore) -> None:
    claims = await asyncio.gather(*(store.claim_submission("t1", 2, f"n{i}") for i in range(5)))
    assert claims.count(True) == 1
    await store.release_submission("t1", 2)
    assert await store.claim_submission("t1", 2, "n9")


async def test_an_idempotency_key_binds_one_task_per_tenant_for_a_day(
    store: TaskStore, redis: Redis
) -> None:
    first, second = (
        IdempotencyBinding(task_id="t1", fingerprint="a"),
        IdempotencyBinding(task_id="t2", fingerprint="b"),
    )
    assert await store.bind_idempotency_key("acme", "order-7", first) is None
    assert await store.bind_idempotency_key("acme", "order-7", second) == first
    assert await store.bind_idempotency_key("other", "order-7", second) is None  # own namespace
    assert 0 < await redis.ttl(KEYS.idempotency("acme", "order-7")) <= 24 * 3600
    await store.unbind_idempotency_key("acme", "order-7")
    assert await store.bind_idempotency_key("acme", "order-7", second) is None


# --- usage: counted by the write that ends a task ---------------------------------------------

START = datetime(2026, 3, 9, 12, 0, 0, tzinfo=UTC)
DAY = date(2026, 3, 9)


async def run_for(store: TaskStore, task_id: str, seconds: float) -> None:
    await store.apply(task_id, Started(ATTEMPT, at=START))
    await store.apply(task_id, Ended(ATTEMPT, at=START + timedelta(seconds=seconds)))


async def test_the_end_of_a_task_counts_it_for_its_tenant_and_its_key(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(on_node("t1", tenant="acme", key_id="k1", workflow="demo"))

    await run_for(store, "t1", 2.5)

    assert await redis.hgetall(KEYS.usage_tenant("acme", DAY)) == {
        "tasks:succeeded": "1",
        "gpu_s:total": "2.5",
        "gpu_s:workflow:demo": "2.5",
        f"gpu_s:node:{NODE}": "2.5",
    }
    assert await redis.hgetall(KEYS.usage_key("k1", DAY)) == {
        "tasks:succeeded": "1",
        "gpu_s:total": "2.5",
    }
    for key in (KEYS.usage_tenant("acme", DAY), KEYS.usage_key("k1", DAY)):
        assert USAGE_TTL_S - 10 < await redis.ttl(key) <= USAGE_TTL_S
    assert await redis.zrange(KEYS.usage_tenants(), 0, -1, withscores=True) == [
        ("acme", 20260309.0)
    ]


async def test_a_replayed_or_concurrent_end_is_counted_once(store: TaskStore, redis: Redis) -> None:
    await store.create(on_node("t1", tenant="acme", key_id="k1"))
    await store.apply("t1", Started(ATTEMPT, at=START))
    end = Ended(ATTEMPT, at=START + timedelta(seconds=3))
    failure = Ended(ATTEMPT, error=TaskError(type=ErrorType.COMFYUI, message="boom"), at=end.at)

    events: list[TaskEvent] = [end, failure, Cancelled(at=end.at)] * 3
    results = await asyncio.gather(
        *(store.apply("t1", event) for event in events), return_exceptions=True
    )
    with pytest.raises(Refused):
        await store.apply("t1", end)  # the node reports it again later

    winner = next(r for r in results if isinstance(r, TaskRecord))
    tenant_usage = cast(dict[str, str], await redis.hgetall(KEYS.usage_tenant("acme", DAY)))
    assert tenant_usage[f"tasks:{winner.status.value}"] == "1"
    assert sum(float(v) for f, v in tenant_usage.items() if f.startswith("tasks:")) == 1
    assert tenant_usage["gpu_s:total"] == "3"
    assert (await redis.hgetall(KEYS.usage_key("k1", DAY)))["gpu_s:total"] == "3"


async def test_a_task_without_a_key_counts_for_its_tenant_only(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(on_node("t1"))
    await store.apply("t1", Cancelled(at=START))

    assert await redis.hgetall(KEYS.usage_tenant("default", DAY)) == {
        "tasks:cancelled": "1",
        "gpu_s:total": "0",
    }
    assert await redis.keys(f"{KEYS.prefix}:usage:key:*") == []


async def test_progress_writes_count_nothing(store: TaskStore, redis: Redis) -> None:
    await store.create(on_node("t1", tenant="acme"))
    await store.apply("t1", Progressed(ATTEMPT, "3", 1, 20))

    assert await redis.keys(f"{KEYS.prefix}:usage:*") == []


# --- webhooks: put in the outbox by the write that ends a task ----------------------------------

HOOK = "https://hooks.example/done"


async def test_a_replayed_or_concurrent_end_puts_one_webhook_in_the_outbox(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(on_node("t1", webhook_url=HOOK))
    await run(store, "t1")
    events: list[TaskEvent] = [Ended(ATTEMPT), Cancelled()] * 4

    results = await asyncio.gather(
        *(store.apply("t1", event) for event in events), return_exceptions=True
    )
    with pytest.raises(Refused):
        await succeed(store, "t1")

    winner = next(r for r in results if isinstance(r, TaskRecord))
    assert await redis.zrange(KEYS.webhook_outbox(), 0, -1) == ["t1"]
    message = cast(dict[str, str], await redis.hgetall(KEYS.webhook("t1")))
    assert message["attempts"] == "0"
    assert TaskRecord.model_validate_json(message["record"]) == winner
    assert 0 < await redis.ttl(KEYS.webhook("t1")) <= MESSAGE_TTL_S


async def test_a_task_without_a_webhook_puts_nothing_in_the_outbox(
    store: TaskStore, redis: Redis
) -> None:
    await store.create(on_node("t1"))
    await run(store, "t1")
    await succeed(store, "t1")

    assert await redis.exists(KEYS.webhook_outbox(), KEYS.webhook("t1")) == 0


async def test_an_end_while_the_outbox_is_full_is_a_dead_letter_and_dead_letters_are_capped(
    store: TaskStore, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_outbox, "OUTBOX_MAX", 1)
    monkeypatch.setattr(webhook_outbox, "DEAD_MAX", 2)
    for task_id in ("t1", "t2", "t3", "t4"):
        await store.create(on_node(task_id, webhook_url=HOOK))
        await store.apply(task_id, Cancelled())

    assert await redis.zrange(KEYS.webhook_outbox(), 0, -1) == ["t1"]
    assert await redis.zrange(KEYS.webhook_dead(), 0, -1) == ["t3", "t4"]
    assert await redis.hget(KEYS.webhook("t4"), "last_error") == webhook_outbox.OUTBOX_FULL
    assert await redis.exists(KEYS.webhook("t2")) == 0  # trimmed with its dead letter
