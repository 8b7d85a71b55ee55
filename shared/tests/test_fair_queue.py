"""The queue's policy as tables: bands, fair tags (weights, costs, idle flows), priority inside
a flow, aging, caps, and positions that match the order tasks are placed in. Each case runs
the queue's real scripts on a real Redis: a list of submits and placements, then the order
the rest is placed in."""

from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from comfy_shared.models import Band, TaskRecord
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import FIFO_FLOW, MAX_REORDER, KeyQuota, Share, TaskQueue
from comfy_shared.task_store import TaskStore

KEYS = RedisKeys("fair")
PROMPT = {"1": {"class_type": "X", "inputs": {}}}
BIG_NODE_SLOTS = 10**6


@dataclass(frozen=True)
class Submit:
    task_id: str
    tenant: str
    cost_s: float = 10.0
    weight: float = 1.0
    priority: int = 0
    band: Band = Band.STANDARD


@dataclass(frozen=True)
class Place:
    """Place the next ``count`` tasks in order (they start running)."""

    count: int = 1


Step = Submit | Place


def tenant_tasks(
    tenant: str,
    count: int,
    *,
    cost_s: float = 10.0,
    weight: float = 1.0,
    band: Band = Band.STANDARD,
) -> list[Submit]:
    return [
        Submit(f"{tenant}{n}", tenant, cost_s=cost_s, weight=weight, band=band)
        for n in range(1, count + 1)
    ]


@pytest.fixture
def queue(redis: Redis) -> TaskQueue:
    return TaskQueue(redis, KEYS, TaskStore(redis, KEYS))


async def play(queue: TaskQueue, steps: list[Step], *, fair: bool = True) -> list[str]:
    """Run ``steps``; returns every task in the order it was placed, the rest drained."""
    placed: list[str] = []
    for step in steps:
        if isinstance(step, Submit):
            await submit(queue, step, fair=fair)
        else:
            placed += await place(queue, step.count)
    await check_positions(queue)
    return placed + await place(queue, BIG_NODE_SLOTS)


async def place(queue: TaskQueue, count: int) -> list[str]:
    placed: list[str] = []
    while len(placed) < count and (head := await queue.head(1)):
        assert await queue.claim(head[0], "gpu", BIG_NODE_SLOTS) == 1
        placed.append(head[0])
    return placed


async def check_positions(queue: TaskQueue) -> None:
    """Every waiting task's position is its index in the order of placement."""
    order = await queue.head(BIG_NODE_SLOTS)
    assert [await queue.position(task_id) for task_id in order] == list(range(len(order)))


CASES: dict[str, tuple[list[Step], list[str]]] = {
    "a light tenant goes next, behind only what the heavy one is running": (
        [*tenant_tasks("h", 5), Place(1), Submit("a1", "a"), Submit("b1", "b")],
        ["h1", "a1", "b1", "h2", "h3", "h4", "h5"],
    ),
    "twice the weight, twice the turns": (
        [*tenant_tasks("x", 6, weight=2.0), *tenant_tasks("y", 3)],
        ["x1", "y1", "x2", "x3", "y2", "x4", "x5", "y3", "x6"],
    ),
    "turns are weighted by GPU-seconds: one video for four images": (
        [*tenant_tasks("v", 3, cost_s=40.0), *tenant_tasks("i", 8, cost_s=10.0)],
        ["i1", "v1", "i2", "i3", "i4", "i5", "v2", "i6", "i7", "i8", "v3"],
    ),
    "an idle tenant banks no credit: it shares from now on, it does not catch up": (
        [*tenant_tasks("b", 5), Place(3), *tenant_tasks("a", 3)],
        ["b1", "b2", "b3", "a1", "a2", "b4", "a3", "b5"],
    ),
    "priority reorders the tenant's own tasks only": (
        [
            *tenant_tasks("b", 3),
            Submit("a1", "a"),
            Submit("b9", "b", priority=1000),
        ],
        # b9 takes b1's turn (the first); a1 keeps its own, ahead of b's second turn
        ["a1", "b9", "b1", "b2", "b3"],
    ),
    "bands are served in order, whoever submitted first": (
        [
            *tenant_tasks("b", 2, band=Band.BATCH),
            *tenant_tasks("s", 2),
            *tenant_tasks("i", 2, band=Band.INTERACTIVE),
        ],
        ["i1", "i2", "s1", "s2", "b1", "b2"],
    ),
}


@pytest.mark.parametrize(("steps", "expected"), CASES.values(), ids=CASES.keys())
async def test_fair_order(queue: TaskQueue, steps: list[Step], expected: list[str]) -> None:
    assert await play(queue, steps) == expected


async def test_fifo_is_arrival_order_within_a_band(queue: TaskQueue) -> None:
    steps: list[Step] = [*tenant_tasks("h", 3), Submit("a1", "a"), Submit("b1", "b", priority=5)]

    assert await play(queue, steps, fair=False) == ["b1", "h1", "h2", "h3", "a1"]


async def test_a_batch_task_that_waited_long_enough_goes_before_every_band(
    redis: Redis,
) -> None:
    impatient = TaskQueue(redis, KEYS, TaskStore(redis, KEYS), batch_max_wait_s=0)
    steps: list[Step] = [
        Submit("b1", "b", band=Band.BATCH),
        Submit("i1", "i", band=Band.INTERACTIVE),
        Submit("b2", "b", band=Band.BATCH),
    ]

    assert await play(impatient, steps) == ["b1", "b2", "i1"]
    assert (await impatient.stats()).aged == 0


async def test_a_requeued_task_gets_its_old_turn_back(queue: TaskQueue) -> None:
    await play_without_draining(queue, [*tenant_tasks("a", 3), *tenant_tasks("b", 3)])
    assert await place(queue, 2) == ["a1", "b1"]

    assert await queue.requeue("a1", "gpu")

    assert await queue.head(10) == ["a1", "a2", "b2", "a3", "b3"]
    await check_positions(queue)


async def test_a_task_skipped_for_a_busy_node_does_not_push_newcomers_back(
    queue: TaskQueue,
) -> None:
    await play_without_draining(queue, tenant_tasks("h", 5))
    for task_id in ("h1", "h3", "h4"):  # h2 waits for the one node that can run it
        assert await queue.claim(task_id, "gpu", BIG_NODE_SLOTS) == 1

    await submit(queue, Submit("a1", "a"))

    # tagged at h2's turn, the lowest still waiting, not behind the placed h4
    assert await queue.head(10) == ["a1", "h2", "h5"]


async def test_priority_moves_a_task_ahead_of_at_most_the_newest_of_its_own(
    queue: TaskQueue,
) -> None:
    backlog = tenant_tasks("t", MAX_REORDER + 44)
    await play_without_draining(queue, backlog)

    await submit(queue, Submit("urgent", "t", priority=5))

    assert await queue.position("urgent") == 44
    assert (await queue.head(46))[43:] == ["t44", "urgent", "t45"]


async def test_a_cancelled_task_gives_its_tenant_s_turn_back(queue: TaskQueue) -> None:
    await play_without_draining(queue, [*tenant_tasks("a", 3)])
    assert await queue.remove("a3")
    assert await queue.remove("a2")
    await play_without_draining(queue, [*tenant_tasks("b", 2), Submit("a4", "a")])

    # a4 takes the turn after a1, as a2 would have: not the one after the cancelled a3
    assert await queue.head(10) == ["a1", "b1", "a4", "b2"]
    await check_positions(queue)


async def test_caps_of_a_key_and_of_a_group_hold_tasks_back(queue: TaskQueue) -> None:
    await queue.set_group_limit("class", 2)
    student = KeyQuota(max_running=1)
    for task_id, key in [("s1", "k1"), ("s2", "k1"), ("t1", "k2"), ("u1", "k3")]:
        record = TaskRecord(id=task_id, key_id=key)
        share = Share(flow=key, group="class")
        await queue.submit(record, PROMPT, limits=student, share=share)

    claims = {task_id: await queue.claim(task_id, "gpu", 10) for task_id in ("s1", "s2", "t1")}
    assert claims == {"s1": 1, "s2": -2, "t1": 1}  # k1 runs its one task
    assert await queue.claim("u1", "gpu", 10) == -3  # the class runs its two
    await queue.release("s1", "gpu")
    assert await queue.claim("u1", "gpu", 10) == 1
    assert await queue.group_limits() == {"class": 2}


async def play_without_draining(queue: TaskQueue, steps: list[Submit]) -> None:
    for step in steps:
        await submit(queue, step)


async def submit(queue: TaskQueue, step: Submit, *, fair: bool = True) -> None:
    record = TaskRecord(id=step.task_id, priority=step.priority, band=step.band)
    flow = step.tenant if fair else FIFO_FLOW
    share = Share(flow=flow, cost_s=step.cost_s, weight=step.weight)
    assert (await queue.submit(record, PROMPT, share=share)).created
