"""ETAs of waiting tasks as a table: the work ahead over the fleet's pace."""

from datetime import UTC, datetime, timedelta

import pytest

from comfy_balancer.eta import FleetPace, relative_speed
from comfy_shared.models import NodeSpeed

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
REFERENCE = NodeSpeed(seconds_per_step=0.5, overhead_s=1.0, tasks_measured=20)


@pytest.mark.parametrize(
    ("pace", "position", "cost_s", "start_in_s", "run_s"),
    [
        # four nodes at the reference speed, nothing placed: a free node starts it now
        (FleetPace(nodes=4, rate=4.0, busy_s=0.0, mean_queued_cost_s=None), 0, 10.0, 0.0, 10.0),
        # 8 s still to run on the nodes and two 10 s tasks ahead, at 4 GPU-seconds a second
        (FleetPace(nodes=4, rate=4.0, busy_s=8.0, mean_queued_cost_s=10.0), 2, 10.0, 7.0, 10.0),
        # a fleet of 1x + 3x: twice the reference pace per node on average
        (FleetPace(nodes=2, rate=4.0, busy_s=0.0, mean_queued_cost_s=20.0), 3, 10.0, 15.0, 5.0),
        # the queue's mean cost, not the task's own, measures the tasks ahead
        (FleetPace(nodes=1, rate=1.0, busy_s=5.0, mean_queued_cost_s=1.0), 10, 60.0, 15.0, 60.0),
    ],
)
def test_a_task_starts_once_the_work_ahead_is_done(
    pace: FleetPace, position: int, cost_s: float, start_in_s: float, run_s: float
) -> None:
    eta = pace.eta(position, cost_s, NOW)

    assert eta is not None
    assert eta.start == NOW + timedelta(seconds=start_in_s)
    assert eta.finish == eta.start + timedelta(seconds=run_s)


def test_no_live_node_no_eta() -> None:
    assert FleetPace(nodes=0, rate=0.0, busy_s=0.0, mean_queued_cost_s=5.0).eta(0, 1.0, NOW) is None


@pytest.mark.parametrize(
    ("speed", "relative"),
    [
        (NodeSpeed(seconds_per_step=0.25, overhead_s=1.0, tasks_measured=3), 2.0),
        (NodeSpeed(seconds_per_step=1.0, overhead_s=1.0, tasks_measured=3), 0.5),
        (NodeSpeed(seconds_per_step=0.25, overhead_s=1.0, tasks_measured=0), 1.0),
        (None, 1.0),
    ],
)
def test_a_node_s_pace_is_relative_to_the_fleet_s_median(
    speed: NodeSpeed | None, relative: float
) -> None:
    assert relative_speed(speed, REFERENCE) == relative
