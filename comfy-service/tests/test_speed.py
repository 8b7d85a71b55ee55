"""The node's speed as learnt from ComfyUI's events: a clock under test control, no I/O."""

from collections.abc import Callable

import pytest

from comfy_service.speed import SpeedMeter
from comfy_shared.models import NodeSpeed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_task(
    meter: SpeedMeter,
    clock: Clock,
    task: str,
    *,
    steps: int,
    step_s: float,
    load_s: float = 0.0,
    hot: bool = True,
) -> None:
    """``load_s`` of loading models, 1 s of encoding, ``steps`` sampler steps, 0.5 s of
    decoding and saving."""
    meter.started(task)
    clock.now += load_s + 1.0
    meter.progressed(task, "3", 0)  # ComfyUI's executing-node reset, then one event per step
    for value in range(1, steps + 1):
        clock.now += step_s
        meter.progressed(task, "3", value)
    clock.now += 0.5
    meter.ended(task, hot=hot)


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
    meter.ended("lost", hot=True)
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
    meter.ended("t", hot=True)
    speed = meter.current()
    assert speed is not None
    assert speed.seconds_per_step == pytest.approx(0.2)


def model_free(meter: SpeedMeter, clock: Clock) -> None:
    """18 s of a graph without sampler steps (an upscale): not 18 s of overhead per task."""
    meter.started("t2")
    clock.now += 18.0
    meter.ended("t2", hot=True)


def cold(meter: SpeedMeter, clock: Clock) -> None:
    """12 s of loading a checkpoint before the sampler: a switch of models, not overhead."""
    run_task(meter, clock, "t2", steps=20, step_s=0.2, load_s=12.0, hot=False)


def failed(meter: SpeedMeter, clock: Clock) -> None:
    """Interrupted at its third step: the time of a run cut short says nothing."""
    meter.started("t2")
    meter.progressed("t2", "3", 0)
    clock.now += 0.6
    meter.progressed("t2", "3", 3)
    meter.ended("t2", hot=False)


def hot(meter: SpeedMeter, clock: Clock) -> None:
    run_task(meter, clock, "t2", steps=20, step_s=0.2)


MEASURED = NodeSpeed(seconds_per_step=0.2, overhead_s=1.5, tasks_measured=1)


@pytest.mark.parametrize(
    ("second_run", "after"),
    [
        (model_free, MEASURED),
        (cold, MEASURED),
        (failed, MEASURED),
        (hot, MEASURED.model_copy(update={"tasks_measured": 2})),
    ],
)
def test_only_a_hot_run_with_sampler_steps_teaches_the_overhead(
    second_run: Callable[[SpeedMeter, Clock], None], after: NodeSpeed
) -> None:
    clock = Clock()
    meter = SpeedMeter(clock=clock)
    run_task(meter, clock, "t1", steps=20, step_s=0.2)
    second_run(meter, clock)
    speed = meter.current()
    assert speed is not None
    assert speed.seconds_per_step == pytest.approx(after.seconds_per_step)
    assert speed.overhead_s == pytest.approx(after.overhead_s)
    assert speed.tasks_measured == after.tasks_measured


def test_a_model_free_graph_alone_leaves_the_speed_unknown() -> None:
    clock = Clock()
    meter = SpeedMeter(clock=clock)
    model_free(meter, clock)
    assert meter.current() is None
    assert meter.expected_s(20) == 0.0


def test_expected_time_of_a_hot_run() -> None:
    clock = Clock()
    meter = SpeedMeter(clock=clock)
    run_task(meter, clock, "t", steps=20, step_s=0.2)
    assert meter.expected_s(10) == pytest.approx(1.5 + 10 * 0.2)
