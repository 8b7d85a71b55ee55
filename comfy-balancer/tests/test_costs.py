"""What a task is charged: steps at the fleet's reference speed until its graph's shape has
run, then what its runs took, on the real Redis."""

import pytest
from redis.asyncio import Redis

from comfy_balancer.costs import MIN_COST_S, CostModel, reference_speed, relative_speed
from comfy_shared.models import NodeSpeed
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs

REFERENCE = NodeSpeed(seconds_per_step=0.5, overhead_s=1.0, tasks_measured=20)
SLOW = NodeSpeed(seconds_per_step=1.0, overhead_s=2.0, tasks_measured=5)
FAST = NodeSpeed(seconds_per_step=0.25, overhead_s=1.0, tasks_measured=5)


@pytest.mark.parametrize(
    ("speed", "relative"),
    [(FAST, 2.0), (SLOW, 0.5), (FAST.model_copy(update={"tasks_measured": 0}), 1.0), (None, 1.0)],
)
def test_a_node_s_pace_is_relative_to_the_fleet_s_median(
    speed: NodeSpeed | None, relative: float
) -> None:
    assert relative_speed(speed, REFERENCE) == relative


def test_the_reference_is_the_median_of_the_measured_nodes() -> None:
    unmeasured = NodeSpeed(seconds_per_step=9.0, overhead_s=9.0, tasks_measured=0)
    fleet = reference_speed([SLOW, FAST, REFERENCE, unmeasured])
    assert (fleet.seconds_per_step, fleet.overhead_s) == (0.5, 1.0)


@pytest.fixture
def costs(redis: Redis) -> CostModel:
    return CostModel(redis, RedisKeys("costs"))


async def test_an_untaught_graph_costs_its_steps_at_the_reference_speed(costs: CostModel) -> None:
    graph = graphs.txt2img("untaught", steps=20)
    assert await costs.predict(graph, [SLOW, FAST, REFERENCE]) == 1.0 + 20 * 0.5
    assert await costs.predict(graphs.solid_image("no-steps"), []) == MIN_COST_S


async def test_runs_teach_a_shape_its_cost_whatever_its_text_and_seed(costs: CostModel) -> None:
    taught = graphs.txt2img("a lighthouse", steps=20, seed=1)
    await costs.learn(taught, run_s=4.0, node=FAST, fleet=REFERENCE)  # 8 s at the reference
    await costs.learn(taught, run_s=12.0, node=SLOW, fleet=REFERENCE)  # 6 s at the reference

    other_text = graphs.txt2img("a harbour at night", steps=20, seed=99)
    assert await costs.predict(other_text, [REFERENCE]) == pytest.approx(7.0)
    more_steps = graphs.txt2img("a lighthouse", steps=40, seed=1)
    assert await costs.predict(more_steps, [REFERENCE]) == 1.0 + 40 * 0.5  # another shape
