"""Submission, endings and reconciliation in-process: the real store in Redis and an emulated
ComfyUI in this event loop, no service process. The attempt a prompt belongs to decides
everything: a prompt whose attempt is over is withdrawn, and its result is never recorded."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from comfy_emulator import EmulatorConfig, RunningEmulator, start_emulator
from comfy_service.ending import TaskEndings
from comfy_service.keeping import OutputKeeper
from comfy_service.memory import MemoryRelief
from comfy_service.prompts import FollowedPrompts
from comfy_service.reconcile import reconcile_once
from comfy_service.submission import Submitter
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.comfyui import ComfyClient, SubmitResult
from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_shared.lifecycle import AttemptRef, Placed, TakenBack
from comfy_shared.models import RetryPolicy, TaskRecord
from comfy_shared.outputs.catalog import OutputCatalog
from comfy_shared.outputs.file_store import FileStore
from comfy_shared.outputs.inputs import InputStash
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_shared.workflows import DEFAULT_TEMPLATES_DIR, TemplateLibrary
from comfy_testkit import graphs
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys("attempts")
NODE = "n1"


@dataclass
class Node:
    store: TaskStore
    queue: TaskQueue
    comfy: ComfyClient
    prompts: FollowedPrompts
    submitter: Submitter
    endings: TaskEndings
    emulator: RunningEmulator

    async def reconcile(self) -> None:
        await reconcile_once(
            endings=self.endings, store=self.store, prompts=self.prompts, comfy=self.comfy
        )

    async def place(self, task_id: str, prompt: dict[str, object]) -> TaskRecord:
        """What the balancer does before it sends a task to this node."""
        await self.queue.submit(TaskRecord(id=task_id, retry=RetryPolicy()), prompt)
        assert await self.queue.claim(task_id, NODE, slots=2) == 1
        return await self.store.apply(task_id, Placed(NODE))

    async def send(self, task_id: str, prompt: dict[str, object]) -> TaskRecord:
        request = GenerateRequest.model_validate({"task_id": task_id, "prompt": prompt})
        return (await self.submitter.submit(request)).task

    async def executions(self, prompt_id: str) -> int:
        control = EmulatorControl(self.emulator.url)
        try:
            return await control.executions(prompt_id)
        finally:
            await control.aclose()


@pytest.fixture
async def node(redis: Redis, tmp_path: Path) -> AsyncIterator[Node]:
    emulator = await start_emulator(EmulatorConfig(port=0, step_time=0.01, load_scale=0.01))
    store = TaskStore(redis, KEYS)
    queue = TaskQueue(redis, KEYS, store)
    prompts = FollowedPrompts(redis, KEYS, NODE)
    async with ComfyClient(emulator.url) as comfy:
        outputs = FileStore(tmp_path / "outputs")
        await outputs.open()
        catalog = OutputCatalog(redis, KEYS)
        keeper = OutputKeeper(store=outputs, catalog=catalog, comfy=comfy, ttl_s=3600)
        endings = TaskEndings(
            store=store,
            queue=queue,
            comfy=comfy,
            prompts=prompts,
            node_id=NODE,
            keeper=keeper,
            memory=MemoryRelief(comfy, lambda: None),
        )
        yield Node(
            store=store,
            queue=queue,
            comfy=comfy,
            prompts=prompts,
            submitter=Submitter(
                store=store,
                stash=InputStash(store=outputs, catalog=catalog, hold_s=3600),
                comfy=comfy,
                prompts=prompts,
                endings=endings,
                templates=TemplateLibrary.load(DEFAULT_TEMPLATES_DIR),
                node_id=NODE,
                client_id="test",
            ),
            endings=endings,
            emulator=emulator,
        )
    await emulator.stop()


async def test_a_placement_is_sent_once_and_marked_with_its_prompt(node: Node) -> None:
    graph = graphs.solid_image("once")
    await node.place("t-1", graph)

    sent = await node.send("t-1", graph)
    again = await node.send("t-1", graph)  # the balancer lost the answer and sends again

    prompt_id = prompt_id_for("t-1", 1)
    assert sent.submitted_at is not None
    assert sent.attempt_log[-1].prompt_id == prompt_id
    assert again.attempts == 1
    assert [p.prompt_id for p in await node.prompts.all()] in ([prompt_id], [])

    async def ran_once() -> bool:
        return await node.executions(prompt_id) == 1

    await wait_for_condition(ran_once, what="one execution")


async def test_the_prompt_of_a_task_that_moved_is_withdrawn_and_never_completes(
    node: Node,
) -> None:
    blocker = graphs.txt2img("blocker", steps=300)
    await node.send("blocker", blocker)  # keeps ComfyUI busy: the next prompt waits
    graph = graphs.solid_image("moved")
    await node.place("t-2", graph)
    await node.send("t-2", graph)
    # The balancer took this node for dead and placed the task elsewhere meanwhile.
    await node.store.apply("t-2", TakenBack(AttemptRef(NODE, 1), "lost"))
    await node.store.apply("t-2", Placed("n2"))

    await node.reconcile()

    assert [p.task_id for p in await node.prompts.all()] == ["blocker"]
    queue = await node.comfy.get_queue()
    assert queue.position(prompt_id_for("t-2", 1)) is None  # dequeued before it started
    record = await node.store.get("t-2")
    assert (record.status, record.node_id, record.attempts) == (TaskStatus.DISPATCHED, "n2", 2)
    await node.endings.cancel("blocker")
    assert await node.executions(prompt_id_for("t-2", 1)) == 0


async def test_a_result_from_an_attempt_that_is_over_is_not_recorded(node: Node) -> None:
    graph = graphs.solid_image("late")
    await node.place("t-3", graph)
    await node.send("t-3", graph)
    [prompt] = await node.prompts.all()

    async def finished_in_comfy() -> bool:
        return await node.comfy.get_history(prompt.prompt_id) is not None

    await wait_for_condition(finished_in_comfy, what="the prompt done in ComfyUI")
    await node.store.apply("t-3", TakenBack(AttemptRef(NODE, 1), "ComfyUI unreachable for 12s"))

    assert await node.endings.finish(prompt) is None
    record = await node.store.get("t-3")
    assert (record.status, record.outputs) == (TaskStatus.QUEUED, [])
    assert await node.prompts.all() == []


async def test_a_prompt_whose_attempt_moved_while_it_was_sent_is_withdrawn_at_once(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    await node.send("blocker-2", graphs.txt2img("blocker-2", steps=300))
    graph = graphs.solid_image("resent")
    await node.place("t-4", graph)
    submit = node.comfy.submit

    async def submit_then_lose_the_task(*args: Any, **kwargs: Any) -> SubmitResult:
        result = await submit(*args, **kwargs)
        # The balancer gave up on this attempt just as ComfyUI queued its prompt.
        await node.store.apply("t-4", TakenBack(AttemptRef(NODE, 1), "dispatch timed out"))
        return result

    monkeypatch.setattr(node.comfy, "submit", submit_then_lose_the_task)
    await node.send("t-4", graph)

    assert [p.task_id for p in await node.prompts.all()] == ["blocker-2"]
    assert (await node.comfy.get_queue()).position(prompt_id_for("t-4", 1)) is None
    await node.endings.cancel("blocker-2")
    assert await node.executions(prompt_id_for("t-4", 1)) == 0
