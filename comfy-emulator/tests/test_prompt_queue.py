"""PromptQueue: heap order, deletes, history window and cap, status notifications."""

from __future__ import annotations

from comfy_emulator.prompt_queue import ExecutionStatus, PromptQueue, QueueEntry


def entry(number: float, prompt_id: str) -> QueueEntry:
    return QueueEntry(number, prompt_id, {}, {}, ["9"])


def done(queue: PromptQueue, task_id: int) -> None:
    queue.task_done(task_id, {"outputs": {}, "meta": {}}, ExecutionStatus("success", True, []))


async def test_runs_lowest_number_first_and_ties_by_prompt_id() -> None:
    queue = PromptQueue(lambda: None)
    for number, prompt_id in [
        (15, "q0"),
        (16, "q1"),
        (17, "q2"),
        (-18, "front"),
        (2.5, "num"),
        (15, "a"),
    ]:
        queue.put(entry(number, prompt_id))
    order = [(await queue.get())[1].prompt_id for _ in range(6)]
    assert order == ["front", "num", "a", "q0", "q1", "q2"]


def test_pending_is_shown_in_raw_heap_order() -> None:
    queue = PromptQueue(lambda: None)
    for number in (15, 16, 17, -18, 2.5):
        queue.put(entry(number, f"p{number}"))
    _, pending = queue.snapshot()
    assert [item[0] for item in pending] == [-18, 2.5, 17, 16, 15]


def test_delete_removes_the_first_match_and_reports() -> None:
    changes: list[int] = []
    queue = PromptQueue(lambda: changes.append(queue.remaining()))
    queue.put(entry(1, "dup"))
    queue.put(entry(2, "dup"))
    changes.clear()
    assert queue.delete_pending("dup")
    assert [e.number for e in queue.pending] == [2]
    assert changes == [1]
    assert queue.delete_pending("dup")
    assert changes == [1, 0, 0]  # the last one is wiped, then reported again
    assert not queue.delete_pending("missing")


async def test_history_window_and_cap() -> None:
    queue = PromptQueue(lambda: None, history_max=3)
    for n in range(5):
        queue.put(entry(n, f"p{n}"))
        task_id, _ = await queue.get()
        done(queue, task_id)
    # More than 3 entries are needed before the oldest is evicted (ComfyUI's ">" check).
    assert list(queue.history) == ["p1", "p2", "p3", "p4"]
    assert list(queue.get_history(max_items=2)) == ["p3", "p4"]
    assert list(queue.get_history(offset=1)) == ["p2", "p3", "p4"]
    assert list(queue.get_history(max_items=1, offset=1)) == ["p2"]
    assert queue.get_history(prompt_id="nope") == {}


async def test_history_record_shape() -> None:
    queue = PromptQueue(lambda: None)
    queue.put(QueueEntry(0, "p", {"1": {}}, {"client_id": "c"}, ["1"], {"api_key_comfy_org": "k"}))
    task_id, _ = await queue.get()
    assert queue.snapshot()[0] == [[0, "p", {"1": {}}, {"client_id": "c"}, ["1"]]]
    done(queue, task_id)
    record = queue.history["p"]
    assert record["prompt"] == [0, "p", {"1": {}}, {"client_id": "c"}, ["1"]]
    assert record["status"] == {"status_str": "success", "completed": True, "messages": []}


async def test_is_pending_only_while_waiting() -> None:
    queue = PromptQueue(lambda: None)
    queue.put(entry(1, "a"))
    assert queue.is_pending("a")
    assert not queue.is_pending("b")
    await queue.get()
    assert not queue.is_pending("a")  # running now
