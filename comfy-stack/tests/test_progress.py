"""The one-line view of a task: what a waiting user reads."""

from datetime import UTC, datetime, timedelta

import pytest

from comfy_stack.progress import describe

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
