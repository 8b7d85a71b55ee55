"""Reconciliation against a real emulator and Redis: prompts of attempts that are over."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from comfy_service.ending import TaskEndings
from comfy_service.keeping import OutputKeeper
from comfy_service.memory import MemoryRelief
from comfy_service.prompts import FollowedPrompts
from comfy_service.reconcile import reconcile_once
from comfy_shared.comfyui import ComfyClient
from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_shared.lifecycle import AttemptRef, Placed, TakenBack
from comfy_shared.models import RetryPolicy, TaskRecord
from comfy_shared.outputs.catalog import OutputCatalog
from comfy_shared.outputs.file_store import FileStore
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore
from comfy_testkit import graphs
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.plugin import EmulatorFactory
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition

NODE = "node-r"
KEYS = RedisKeys()


@pytest.fixture
def emulator(start_emulator: EmulatorFactory) -> RunningComponent:
    return start_emulator()


@pytest.fixture
async def comfy(emulator: RunningComponent) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(emulator.url, timeout=5) as client:
        yield client


@pytest.fixture
async def control(emulator: RunningComponent) -> AsyncIterator[EmulatorControl]:
    emulator_control = EmulatorControl(emulator.url)
    yield emulator_control
    await emulator_control.aclose()


async def moved_away(store: TaskStore, task_id: str) -> None:
    """A task whose attempt 1 on NODE was taken back (the node was taken for dead)."""
    await store.create(TaskRecord(id=task_id), graphs.solid_image(task_id))
    await store.apply(task_id, Placed(NODE, RetryPolicy()))
    await store.apply(task_id, TakenBack(AttemptRef(NODE, 1), "the node stopped publishing health"))


async def test_moved_prompts_are_withdrawn_waiting_ones_first_so_none_of_them_starts(
    redis: Redis, comfy: ComfyClient, control: EmulatorControl, tmp_path: Path
) -> None:
    store = TaskStore(redis, KEYS)
    prompts = FollowedPrompts(redis, KEYS, NODE)
    # Prompt ids in this order, so an order by id would withdraw the running one first.
    running, waiting = (
        "00000000-0000-4000-8000-000000000001",
        "ffffffff-0000-4000-8000-000000000002",
    )
    await control.hang_next(1)
    for task_id in (running, waiting):
        await moved_away(store, task_id)
        prompt_id = prompt_id_for(task_id, 1)
        await comfy.submit(graphs.solid_image(task_id), prompt_id=prompt_id, client_id="test")
        await prompts.add(prompts.prompt(prompt_id, task_id, 1))

    async def running_hung() -> bool:
        return (await comfy.get_queue()).is_running(running)

    await wait_for_condition(running_hung, what="the first prompt hanging")
    outputs = FileStore(tmp_path / "outputs")
    await outputs.open()
    keeper = OutputKeeper(
        store=outputs, catalog=OutputCatalog(redis, KEYS), comfy=comfy, ttl_s=3600
    )
    endings = TaskEndings(
        store=store,
        queue=TaskQueue(redis, KEYS, store),
        comfy=comfy,
        prompts=prompts,
        node_id=NODE,
        keeper=keeper,
        memory=MemoryRelief(comfy, lambda: None),
    )

    report = await reconcile_once(endings=endings, store=store, prompts=prompts, comfy=comfy)

    assert sorted(report.withdrawn) == [running, waiting]

    async def emptied() -> bool:
        return (await comfy.get_queue()).queue_remaining == 0

    await wait_for_condition(emptied, what="comfyui's queue empty")
    assert await control.executions(waiting) == 0
    assert await prompts.all() == []
