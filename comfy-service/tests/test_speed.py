"""The node's speed as learnt from ComfyUI's events: a clock under test control, no I/O."""

import pytest

from comfy_service.speed import SpeedMeter
from comfy_shared.models import NodeSpeed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_task(meter: SpeedMeter, clock: Clock, task: str, *, steps: int, step_s: float) -> None:
    """1 s of loading, ``steps`` sampler steps, 0.5 s of decoding and saving."""
    meter.started(task)
    clock.now += 1.0
    meter.progressed(task, "3", 0)  # ComfyUI's executing-node reset, then one event per step
    for value in range(1, steps + 1):
        clock.now += step_s
        meter.progressed(task, "3", value)
    clock.now += 0.5
    meter.ended(task)


def test_nothing_is_known_before_a_task_ends() -> None:
    clock = Clock()
    meter = SpeedMeter(clock=clock)
    assert meter.current() is None
    meter.started("t")
    meter.progressed("t", "3", 1)
    assert meter.current() is None


def test_step_time_and_overhead_of_one_task() -> None:
    clock = Clock()
    meter = SpeedMeter(clock=clock)
    run_task(meter, clock, "t", steps=20, step_s=0.2)
    speed = meter.current()
    assert speed is not None
    assert speed.seconds_per_step == pytest.approx(0.2)
    # 1 s before the sampler and 0.5 s after it; its steps are not overhead.
    assert speed.overhead_s == pytest.approx(1.5)
    assert speed.tasks_measured == 1


def test_the_estimate_follows_a_node_that_slows_down() -> None:
    clock = Clock()
    meter = SpeedMeter(clock=clock)
    run_task(meter, clock, "fast", steps=20, step_s=0.1)
    for index in range(3):
        run_task(meter, clock, f"slow-{index}", steps=20, step_s=0.4)
    speed = meter.current()
    assert speed is not None
    assert 0.35 < speed.seconds_per_step < 0.4
    assert speed.tasks_measured == 4


def test_a_run_whose_start_was_not_seen_is_not_measured() -> None:
    clock = Clock()
    meter = SpeedMeter(
        NodeSpeed(seconds_per_step=0.3, overhead_s=2.0, tasks_measured=9), clock=clock
    )
    meter.started("lost")
    meter.forget_runs()  # the socket reconnected: "lost" may have ended unseen
    clock.now += 50
    meter.progressed("lost", "3", 5)
    meter.ended("lost")
    assert meter.current() == NodeSpeed(seconds_per_step=0.3, overhead_s=2.0, tasks_measured=9)


def test_progress_of_another_node_starts_a_new_interval() -> None:
    clock = Clock()
    meter = SpeedMeter(clock=clock)
    meter.started("t")
    meter.progressed("t", "3", 1)
    clock.now += 5.0  # the first sampler's last step, then a pause before the second
    meter.progressed("t", "7", 1)
    clock.now += 0.2
    meter.progressed("t", "7", 2)
    meter.ended("t")
    speed = meter.current()
    assert speed is not None
    assert speed.seconds_per_step == pytest.approx(0.2)
