import asyncio
from collections.abc import Awaitable, Callable
from itertools import islice

from loguru import logger

from comfy_shared.loops import LoopHandle, Supervisor, restart_delays, stop_tasks
from comfy_testkit.waiting import wait_for_condition


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


def captured_messages() -> tuple[list[str], int]:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    return messages, sink


async def test_a_loop_that_raises_is_logged_once_and_started_again() -> None:
    runs = 0
    messages, sink = captured_messages()

    async def body(_: LoopHandle) -> None:
        nonlocal runs
        runs += 1
        raise ConnectionError("redis went away")

    loops = Supervisor()
    loops.start("dispatcher", body)
    await wait_for_condition(holds(lambda: runs >= 3), what="three starts", timeout_s=5)
    problems = loops.problems()
    await loops.stop()
    logger.remove(sink)

    assert [p.loop for p in problems] == ["dispatcher"]
    assert problems[0].error == "ConnectionError: redis went away"
    assert messages.count("loop failing") == 1


async def test_a_loop_that_works_again_clears_its_problem_and_logs_the_outage() -> None:
    dependency_back = asyncio.Event()
    messages, sink = captured_messages()

    async def tick() -> None:
        if not dependency_back.is_set():
            raise TimeoutError("no answer")

    loops = Supervisor()
    handle = loops.start_every("health", 0.001, tick)
    await wait_for_condition(holds(lambda: bool(loops.problems())), what="a problem")
    dependency_back.set()
    await wait_for_condition(holds(lambda: not loops.problems()), what="no problem")
    await loops.stop()
    logger.remove(sink)

    assert handle.restarts == 0  # a failing tick does not end the loop
    assert messages.count("loop failing") == 1
    assert messages.count("loop working again") == 1


async def test_stop_cancels_every_loop_and_leaves_nothing_running() -> None:
    started = 0

    async def forever(_: LoopHandle) -> None:
        nonlocal started
        started += 1
        await asyncio.Event().wait()

    loops = Supervisor()
    for name in ("a", "b", "c"):
        loops.start(name, forever)
    await wait_for_condition(holds(lambda: started == 3), what="three loops", timeout_s=5)
    await loops.stop()

    assert not [t for t in asyncio.all_tasks() if t.get_name() in ("a", "b", "c")]


async def test_stop_tasks_waits_until_every_task_has_ended() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(forever()) for _ in range(3)]
    await asyncio.sleep(0)
    await stop_tasks(tasks)

    assert all(task.done() for task in tasks)


def test_a_loop_that_keeps_failing_is_started_again_at_least_every_two_seconds() -> None:
    # So the balancer's dispatcher places again within 2 s of a long Redis outage's end.
    assert list(islice(restart_delays(), 8)) == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
