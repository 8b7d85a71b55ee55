"""The one-line view of a task: what a waiting user reads."""

import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from comfy_stack.progress import ProgressLine, describe, fit

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def waiting(position: int, start_in_s: float | None) -> dict[str, object]:
    eta = None
    if start_in_s is not None:
        start = NOW + timedelta(seconds=start_in_s)
        eta = {"start": start.isoformat(), "finish": (start + timedelta(seconds=9)).isoformat()}
    return {"id": "t1", "status": "queued", "queue_position": position, "eta": eta}


@pytest.mark.parametrize(
    ("task", "line"),
    [
        (waiting(3, 40), "t1 queued, 3 ahead, starts in about 40 s"),
        (waiting(12, 600), "t1 queued, 12 ahead, starts in about 10 min"),
        (waiting(300, 3 * 3600), "t1 queued, 300 ahead, starts in about 3.0 h"),
        (waiting(0, 0), "t1 queued, starts any moment"),
        (waiting(2, None), "t1 queued, 2 ahead"),  # a service, or no live node: no ETA
    ],
)
def test_a_waiting_task_shows_how_many_are_ahead_and_when_it_starts(
    task: dict[str, object], line: str
) -> None:
    assert describe(task, now=NOW) == line


LONG_ID = "3f2b8c1e-5d4a-4b7e-9c1f-2a3b4c5d6e7f"
RUNNING = {
    "id": LONG_ID,
    "status": "running",
    "node_id": "node-1",
    "progress": {"value": 12, "max": 30, "percent": 40.0, "node": "3"},
}


@pytest.mark.parametrize("width", [40, 80, 200])
def test_the_running_line_fits_the_terminal_and_keeps_a_bar(width: int) -> None:
    line = fit(RUNNING, width)

    assert len(line) <= width
    assert line.endswith("] 12/30")
    bar = line[line.index("[") + 1 : line.index("]")]
    assert len(bar) >= 8
    assert bar.count("#") == round(len(bar) * 0.4)


def test_a_wide_terminal_shows_everything_and_a_narrow_one_the_essentials() -> None:
    assert fit(RUNNING, 200).startswith(f"{LONG_ID} running on node-1 node 3 [")
    assert fit(RUNNING, 60).startswith("3f2b8c1e… running on node-1 node 3 [")
    assert fit(RUNNING, 40).startswith("3f2b8c1e… [")
    assert fit(RUNNING, 10) == "12/30"
    assert fit(waiting(3, 40) | {"id": LONG_ID}, 40, now=NOW) == "3f2b8c1e… queued, 3 ahead"


@pytest.mark.parametrize("width", [40, 80, 200])
def test_the_live_line_never_exceeds_the_terminal_width(width: int) -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=width, force_terminal=True, color_system=None)
    progress = ProgressLine(console)
    for step in range(31):
        share = {"value": step, "max": 30, "percent": 100 * step / 30, "node": "3"}
        progress.update(RUNNING | {"progress": share})
    progress.update(RUNNING | {"status": "succeeded"})
    progress.finish()

    drawn = re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()))
    assert max(len(line) for line in drawn) <= width
    last = [line for line in drawn if line.strip()][-1]
    assert last.endswith(" succeeded")
    assert last == fit(RUNNING | {"status": "succeeded"}, width)


def test_without_a_terminal_it_writes_a_plain_line_per_state_and_quarter() -> None:
    log = io.StringIO()
    progress = ProgressLine(Console(file=log, width=80, force_terminal=False))
    progress.update(waiting(2, None))
    for step in range(31):
        share = {"value": step, "max": 30, "percent": 100 * step / 30, "node": "3"}
        progress.update(RUNNING | {"id": "t1", "progress": share})
    progress.update({"id": "t1", "status": "succeeded"})
    progress.finish()

    lines = log.getvalue().splitlines()
    assert lines[0] == "t1 queued, 2 ahead"
    assert [line.split()[-1] for line in lines[1:-1]] == ["0/30", "8/30", "15/30", "23/30", "30/30"]
    assert lines[-1] == "t1 succeeded"
