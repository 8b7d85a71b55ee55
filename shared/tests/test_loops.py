import asyncio

from comfy_shared.loops import run_every, start_loop, stop_tasks


async def test_a_failing_tick_does_not_stop_the_loop() -> None:
    calls = 0
    third_call = asyncio.Event()

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third_call.set()
        raise RuntimeError("tick failed")

    task = start_loop(run_every(0.001, tick, name="test"), "test")
    await asyncio.wait_for(third_call.wait(), timeout=5)
    await stop_tasks([task])

    assert task.cancelled()
    assert calls >= 3


async def test_stop_tasks_waits_until_every_task_has_ended() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    tasks = [start_loop(forever(), f"t{i}") for i in range(3)]
    await asyncio.sleep(0)
    await stop_tasks(tasks)

    assert all(task.done() for task in tasks)
