"""The supervisor's pure parts (restart backoff, line splitting, line budget) and the reading of
a real child's output: bounded, and never in the child's way or the event loop's."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from comfy_service.supervisor import (
    CUT_MARK,
    LineBudget,
    LineSplitter,
    RestartBackoff,
    child_environment,
    pump_output,
)
from comfy_shared.settings import INTERNAL_TOKEN_ENV


@pytest.mark.parametrize(
    ("uptimes_s", "delays_s"),
    [
        ([0, 0, 0, 0, 0, 0, 0], [1, 2, 4, 8, 16, 30, 30]),  # dies at once: doubles to the cap
        ([0, 0, 0, 60], [1, 2, 4, 1]),  # stayed up a minute: a fresh failure
        ([0, 59.9], [1, 2]),
    ],
)
def test_restart_backoff(uptimes_s: list[float], delays_s: list[float]) -> None:
    backoff = RestartBackoff(first_s=1, longest_s=30, steady_s=60)
    assert [backoff.after_exit(uptime_s) for uptime_s in uptimes_s] == delays_s


def test_lines_end_at_any_newline_and_may_span_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed("got prompt\nLoading 1 new mo") == ["got prompt"]
    lines = splitter.feed("del\r\n 10%|#\r 20%|##\r\n\n")
    assert lines == ["Loading 1 new model", " 10%|#", " 20%|##"]
    assert splitter.feed("Prompt executed in 0.3 seconds") == []
    assert splitter.flush() == ["Prompt executed in 0.3 seconds"]
    assert splitter.flush() == []


def test_a_long_line_is_cut_and_its_rest_dropped_even_across_chunks() -> None:
    splitter = LineSplitter(max_chars=10)
    assert splitter.feed("a" * 25 + "\nshort\n") == ["a" * 10 + CUT_MARK, "short"]
    assert splitter.feed("b" * 8) == []
    assert splitter.feed("b" * 8) == ["b" * 10 + CUT_MARK]  # the head, once it is too long
    assert splitter.feed("b" * 100) == []  # the rest of that line: dropped
    assert splitter.feed("b\nnext") == []
    assert splitter.flush() == ["next"]


def test_the_line_budget_drops_a_flood_and_refills_with_time() -> None:
    now = [0.0]
    budget = LineBudget(per_s=10, burst=3, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert budget.dropped == 2
    now[0] += 0.1  # one line's worth
    assert [budget.take(), budget.take()] == [True, False]
    now[0] += 100
    assert sum(budget.take() for _ in range(10)) == 3  # never more than the burst at once


def test_the_child_gets_no_secret_of_the_service() -> None:
    env = child_environment(
        {"PATH": "/bin", INTERNAL_TOKEN_ENV: "secret", "COMFY_SERVICE_REDIS_URL": "redis://x"}
    )
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1"}


FLOOD = """
import sys
sys.stdout.write("x" * 1_000_000 + "\\n")
for i in range(200_000):
    sys.stdout.write(f"line {i}\\n")
sys.stdout.write("last")
"""


async def test_a_flood_does_not_block_the_child() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    lines: list[str] = []
    await asyncio.wait_for(pump_output(child.stdout, lines.append, LineBudget(burst=1000)), 20)
    assert await asyncio.wait_for(child.wait(), 5) == 0  # it wrote everything and ended
    assert lines[0] == "x" * 4000 + CUT_MARK
    assert 1000 <= len(lines) < 3000  # the burst, and what the rate let through meanwhile


async def test_output_read_faster_than_it_is_logged_lets_the_event_loop_run() -> None:
    stream = asyncio.StreamReader()
    stream.feed_data(b"".join(b"line %d\n" % i for i in range(300_000)))  # all there at once
    stream.feed_eof()
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    await pump_output(stream, lambda line: None, LineBudget(per_s=1e9, burst=10**9))
    ticker.cancel()
    assert len(gaps) > 100  # the loop ran between chunks
    assert max(gaps) < 0.2
