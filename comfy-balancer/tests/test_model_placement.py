"""Model-aware placement as tables: switches, learned run times, affinity window, pressure,
VRAM fit. Pure functions, no Redis."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from comfy_balancer.registry import ModelRoom, NodeView
from comfy_balancer.scheduling import (
    Affinity,
    Demand,
    EarliestFinish,
    FleetKnowledge,
    LeastLoaded,
    ModelPressure,
    affinity,
    expected_s,
    load_models,
    most_wanted,
    pick_node,
    run_s,
    switch_s,
    with_task,
    with_warm_waiting,
)
from comfy_balancer.work import Work
from comfy_shared.models import Capabilities, ComfyStatus, NodeHealth, NodeProfile, NodeSpeed
from comfy_testkit import graphs

GiB = 1024**3
SDXL, SD15, FLUX = "sdxl.safetensors", "sd15.safetensors", "flux.safetensors"
SIZES = {SD15: 2 * GiB, SDXL: 7 * GiB, FLUX: 17 * GiB}
LOADERS = {"CheckpointLoaderSimple": {"ckpt_name": [SDXL, SD15, FLUX]}}


def node(
    node_id: str,
    *,
    resident: tuple[str, ...] = (),
    load_s: dict[str, float] | None = None,
    shape_run_s: dict[str, float] | None = None,
    shape_vram: dict[str, int] | None = None,
    model_bytes: dict[str, int] | None = None,
    vram_total: int | None = 24 * GiB,
    step_s: float = 0.1,
    in_flight: int = 0,
    slots: int = 2,
    backlog_s: float = 0.0,
    prefetch_lead_s: float = math.inf,
) -> NodeView:
    profile = NodeProfile(
        resident=list(resident),
        load_s=load_s or {},
        shape_run_s=shape_run_s or {},
        shape_vram_bytes=shape_vram or {},
        model_bytes=model_bytes or {},
    )
    health = NodeHealth(
        node_id=node_id,
        url=f"http://{node_id}",
        version="1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        comfyui=ComfyStatus(reachable=True, vram_total_bytes=vram_total),
        cpu_percent=0,
        ram_used_bytes=0,
        ram_total_bytes=1,
        capabilities=Capabilities(
            node_classes=["CheckpointLoaderSimple", "KSampler"], models=LOADERS
        ),
        profile=profile,
    )
    return NodeView(
        node_id=node_id,
        health=health,
        last_seen_ms=0,
        in_flight=in_flight,
        slots=slots,
        speed=NodeSpeed(seconds_per_step=step_s, overhead_s=0.0, tasks_measured=5),
        backlog_s=backlog_s,
        prefetch_lead_s=prefetch_lead_s,
        upcoming=resident,
    )


def wants(*models: str, steps: int = 20, **kwargs: Any) -> Demand:
    return Demand(steps=steps, shape="s", models=models, **kwargs)


def anyone(_: NodeView) -> bool:
    return True


def chosen_id(nodes: list[NodeView], demand: Demand, strategy: Any = None) -> str | None:
    picked = pick_node(nodes, anyone, strategy or EarliestFinish(), demand=demand)
    return picked.node_id if picked else None


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        # Warm and busy for 3 s (3 + 2 = 5) beats cold and idle (8 + 2, the switch twice: 18).
        ([node("warm", resident=(SDXL,), in_flight=2, backlog_s=3), node("cold")], "warm"),
        # Busy for 20 s: loading elsewhere (18) is sooner.
        ([node("warm", resident=(SDXL,), in_flight=2, backlog_s=20), node("cold")], "cold"),
        # Both idle: the warm one.
        ([node("cold"), node("warm", resident=(SDXL,))], "warm"),
        # A learned, cheaper switch on one cold node wins over another's dearer one.
        ([node("a", load_s={SDXL: 12}), node("b", load_s={SDXL: 3})], "b"),
        # Speed still counts: the 4x node loads (8 s) and runs (0.5 s) sooner than a 1x
        # warm node with 10 s of work ahead runs it (12 s).
        (
            [
                node("warm", resident=(SDXL,), in_flight=2, backlog_s=10),
                node("fast", step_s=0.025),
            ],
            "warm",
        ),
    ],
)
def test_earliest_finish_counts_the_switch(nodes: list[NodeView], expected: str) -> None:
    assert chosen_id(nodes, wants(SDXL, load_s={SDXL: 8.0})) == expected


def test_model_blind_earliest_finish_ignores_residency() -> None:
    nodes = [node("warm", resident=(SDXL,), in_flight=1, backlog_s=3), node("cold")]
    demand = wants(SDXL, load_s={SDXL: 8.0})
    assert chosen_id(nodes, demand) == "warm"
    assert chosen_id(nodes, demand, EarliestFinish(model_aware=False)) == "cold"


def test_the_affinity_window_bounds_the_wait_for_a_warm_node() -> None:
    # A Flux load from a cold disk: 40 s. The warm node starts the task in 25 s.
    nodes = [node("warm", resident=(FLUX,), in_flight=2, backlog_s=25), node("cold")]
    demand = wants(FLUX, load_s={FLUX: 40.0})
    assert chosen_id(nodes, demand, EarliestFinish(affinity_window_s=math.inf)) == "warm"
    assert chosen_id(nodes, demand, EarliestFinish(affinity_window_s=20)) == "cold"


def test_residency_follows_the_nodes_own_queue() -> None:
    # Room for one model (it holds one): a Flux task placed before evicts SDXL.
    view = node("a", resident=(SDXL,))
    after = with_task(view, wants(FLUX, load_s={FLUX: 20.0}), placed=True)
    assert after.upcoming == (FLUX,)
    assert after.in_flight == 1
    assert after.backlog_s == pytest.approx(20 + 2)
    assert switch_s(after, wants(SDXL, load_s={SDXL: 8.0})) == 8.0
    assert switch_s(after, wants(FLUX, load_s={FLUX: 20.0})) == 0.0


@pytest.mark.parametrize(
    ("resident", "models", "room", "expected"),
    [
        ((), (SDXL,), ModelRoom(count=1), (SDXL,)),
        ((SD15, SDXL), (SD15,), ModelRoom(count=2), (SDXL, SD15)),  # used again: most recent
        ((SD15, SDXL), (FLUX,), ModelRoom(count=2), (SDXL, FLUX)),  # the least recent goes
        ((SD15,), ("lora", SDXL), ModelRoom(count=3), (SD15, "lora", SDXL)),
        # Sizes known: VRAM decides. SD1.5 and SDXL fit beside each other; Flux fits with
        # SD1.5 only.
        ((SD15,), (SDXL,), ModelRoom(count=1, budget_bytes=22 * GiB, sizes=SIZES), (SD15, SDXL)),
        ((SD15, SDXL), (FLUX,), ModelRoom(count=2, budget_bytes=22 * GiB, sizes=SIZES), (FLUX,)),
        (
            (SDXL, SD15),
            (FLUX,),
            ModelRoom(count=2, budget_bytes=22 * GiB, sizes=SIZES),
            (SD15, FLUX),
        ),
        # One size unknown: the count decides.
        ((SD15,), ("other",), ModelRoom(count=1, budget_bytes=22 * GiB, sizes=SIZES), ("other",)),
    ],
)
def test_load_models_is_least_recently_used_within_the_room(
    resident: tuple[str, ...], models: tuple[str, ...], room: ModelRoom, expected: tuple[str, ...]
) -> None:
    assert load_models(resident, models, room) == expected


def test_a_node_s_room_is_its_vram_once_the_sizes_are_known() -> None:
    view = node("a", resident=(SD15,), vram_total=24 * GiB, model_bytes=SIZES)
    assert view.model_room == ModelRoom(count=1, budget_bytes=24 * GiB - 1536 * 2**20, sizes=SIZES)
    assert node("b", vram_total=None).model_room.budget_bytes is None


def test_a_burst_for_a_cold_model_causes_one_load() -> None:
    nodes = {name: node(name) for name in ("a", "b", "c")}
    demand = wants(SDXL, load_s={SDXL: 8.0})  # 2 s runs
    loaded_on = []
    for _ in range(4):
        picked = pick_node(list(nodes.values()), anyone, EarliestFinish(), demand=demand)
        assert picked is not None
        if switch_s(picked, demand):
            loaded_on.append(picked.node_id)
        nodes[picked.node_id] = with_task(picked, demand, placed=False)
    assert loaded_on == ["a"]
    # Once its queue outweighs a second load, another node loads the model too.
    for _ in range(6):
        picked = pick_node(list(nodes.values()), anyone, EarliestFinish(), demand=demand)
        assert picked is not None
        nodes[picked.node_id] = with_task(picked, demand, placed=False)
    assert sum(SDXL in view.upcoming for view in nodes.values()) == 2


def test_learned_run_times_come_first_then_the_fleet_then_steps() -> None:
    demand = wants(steps=20, step_units=50.0)
    assert run_s(node("a", shape_run_s={"s": 7.5}), demand) == 7.5
    # Learned elsewhere: 50 step-times, at this node's 0.2 s per step.
    assert run_s(node("b", step_s=0.2), demand) == pytest.approx(10.0)
    assert run_s(node("c", step_s=0.2), wants(steps=20)) == pytest.approx(4.0)


def test_an_idle_node_that_ran_a_model_free_graph_is_not_avoided() -> None:
    """The case found against a real ComfyUI: an 18 s model-free graph on node a once made
    earliest-finish queue two tasks behind node b while a sat idle. The graph's time is its
    shape's run time, not the node's overhead."""
    a = node("a", shape_run_s={"model-free": 18.0}, resident=(SDXL,))
    b = node("b", resident=(SDXL,), in_flight=1, slots=2, backlog_s=2.0, prefetch_lead_s=0.5)
    demand = wants(SDXL, steps=20)
    assert run_s(a, demand) == pytest.approx(2.0)  # 20 steps x 0.1 s, nothing of the 18 s
    assert chosen_id([a, b], demand) == "a"


def test_a_shape_is_never_placed_where_its_vram_does_not_fit() -> None:
    small, big = node("small", vram_total=12 * GiB), node("big", vram_total=24 * GiB, backlog_s=30)
    demand = wants(FLUX, vram_bytes=17 * GiB)
    for strategy in (EarliestFinish(), LeastLoaded()):
        assert chosen_id([small, big], demand, strategy) == "big"
    assert chosen_id([small], demand) is None
    assert chosen_id([small], wants(FLUX)) == "small"  # not measured yet: no exclusion


def test_describe_takes_what_the_fleet_learned() -> None:
    graph = graphs.txt2img("a cat", steps=20, checkpoint=SDXL)
    work = Work.of(graph)
    a = node("a", load_s={SDXL: 6.0, SD15: 1.0}, shape_run_s={work.shape: 4.0}, step_s=0.1)
    b = node("b", load_s={SDXL: 10.0}, shape_vram={work.shape: 7 * GiB})
    demand = FleetKnowledge([a, b]).describe(work, waited_s=3.0)
    assert demand.models == (SDXL,)
    assert demand.steps == 20
    assert demand.load_s == {SDXL: 8.0}
    assert demand.typical_load_s == pytest.approx(17 / 3)
    assert demand.step_units == pytest.approx(40.0)
    assert demand.vram_bytes == 7 * GiB
    assert demand.waited_s == 3.0
    # b has not run it: 40 step-times at its speed, and its own learned switch.
    assert expected_s(b, demand) == pytest.approx(10.0 + 4.0)


@pytest.mark.parametrize(
    ("demands", "expected"),
    [
        ([wants(SDXL, waited_s=1), wants(FLUX, waited_s=5)], (FLUX,)),
        ([wants(SDXL, waited_s=1), wants(SDXL), wants(FLUX, waited_s=5)], (SDXL,)),
        ([wants(), wants()], None),
    ],
)
def test_most_wanted_weighs_count_and_age(
    demands: list[Demand], expected: tuple[str, ...] | None
) -> None:
    assert most_wanted(demands) == expected


@pytest.mark.parametrize(
    ("nodes", "demand", "expected"),
    [
        # An idle node with the model: at once.
        ([node("a"), node("b", resident=(SDXL,))], wants(SDXL), "b"),
        # Someone holds it, busy: wait up to 1.5 s before loading it elsewhere.
        (
            [node("a"), node("b", resident=(SDXL,), in_flight=2)],
            wants(SDXL, most_wanted=True),
            None,
        ),
        (
            [node("a"), node("b", resident=(SDXL,), in_flight=2)],
            wants(SDXL, most_wanted=True, waited_s=2),
            "a",
        ),
        # Nobody holds it: the most wanted model loads at once, others wait their turn.
        ([node("a"), node("b")], wants(SDXL, most_wanted=True), "a"),
        ([node("a"), node("b")], wants(SDXL, waited_s=30), None),
        # No model to load: the least loaded free node.
        ([node("a", in_flight=1), node("b")], wants(), "b"),
    ],
)
def test_model_pressure_table(nodes: list[NodeView], demand: Demand, expected: str | None) -> None:
    assert chosen_id(nodes, demand, ModelPressure()) == expected


def test_a_node_keeps_to_its_models_while_they_have_work_and_helps_once_they_have_none() -> None:
    sd15 = wants(SD15, load_s={SD15: 2.0})  # 2 s runs
    queued = [wants(SDXL), wants(SDXL), sd15]
    busy_sd15 = node("busy", resident=(SD15,), in_flight=2, backlog_s=6)
    with_work = with_warm_waiting(node("sdxl", resident=(SDXL,)), queued)
    assert with_work.warm_waiting == 2
    # Its SDXL tasks would pay for the switch (4 x 2 s): the SD1.5 task waits for its node.
    assert chosen_id([with_work, busy_sd15], sd15) == "busy"
    idle = with_warm_waiting(node("sdxl", resident=(SDXL,)), [sd15])
    assert idle.warm_waiting == 0
    assert chosen_id([idle, busy_sd15], sd15) == "sdxl"


@pytest.mark.parametrize(
    ("resident", "demand", "expected"),
    [
        ((SDXL,), wants(SDXL), Affinity.HIT),
        ((SD15, SDXL), wants(SDXL), Affinity.HIT),
        ((), wants(), Affinity.HIT),  # loads no model: nothing to switch
        ((SD15,), wants(SDXL), Affinity.SWITCH),
        ((SDXL,), wants(SDXL, FLUX), Affinity.SWITCH),  # one of its models missing
        ((), wants(SDXL), Affinity.COLD),
    ],
)
def test_the_affinity_of_a_placement(
    resident: tuple[str, ...], demand: Demand, expected: Affinity
) -> None:
    assert affinity(node("n", resident=resident), demand) is expected
