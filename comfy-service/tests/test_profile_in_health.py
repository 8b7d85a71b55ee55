"""The node's profile in its health document, learnt from the frames of a real emulator run by
a real service: which checkpoint is resident, a model-free graph's time, a cached loader."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from redis.asyncio import Redis

from comfy_shared.models import NodeHealth, NodeProfile
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.workload import graph_shape
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.plugin import EmulatorFactory, ServiceFactory
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition

KEYS = RedisKeys()
SLOW_IMAGE_S = 1.5
"""The emulator's EmptyImage takes this long: a model-free graph of no sampler step."""


async def run(service: RunningComponent, graph: dict[str, Any]) -> None:
    async with httpx.AsyncClient(
        base_url=service.url, headers=service.auth_headers, timeout=10
    ) as api:
        accepted = await submit(api, graph)
        assert (await wait_until_finished(api, accepted["id"]))["status"] == "succeeded"


def health_where(
    redis: Redis, node_id: str, holds: Callable[[NodeHealth], bool]
) -> Callable[[], Awaitable[NodeHealth | None]]:
    async def read() -> NodeHealth | None:
        raw = await redis.get(KEYS.node_health(node_id))
        health = NodeHealth.model_validate_json(raw) if raw else None
        return health if health is not None and holds(health) else None

    return read


async def test_a_checkpoint_becomes_resident_and_a_slow_model_free_graph_is_no_overhead(
    start_emulator: EmulatorFactory, start_service: ServiceFactory, redis: Redis
) -> None:
    emulator = start_emulator(
        "profile-emulator",
        step_time_s=0.02,
        extra_args=["--node-time", f"EmptyImage={SLOW_IMAGE_S}"],
    )
    service = start_service(emulator.url, node_id="profiled")
    await run(service, graphs.txt2img("cold", seed=1))  # loads the checkpoint
    await run(service, graphs.txt2img("hot", seed=2))
    measured = await wait_for_condition(
        health_where(redis, "profiled", lambda health: health.speed is not None),
        what="the speed of the hot run",
    )
    model_free = graphs.solid_image("model-free")
    shape = graph_shape(model_free)

    await run(service, model_free)

    health = await wait_for_condition(
        health_where(redis, "profiled", lambda health: shape in health.profile.shape_run_s),
        what="the model-free graph's run time",
    )
    assert health.profile.resident == [graphs.SDXL_CHECKPOINT]
    assert SLOW_IMAGE_S - 0.1 < health.profile.shape_run_s[shape] < SLOW_IMAGE_S + 1.5
    assert graph_shape(graphs.txt2img("x")) in health.profile.shape_run_s  # the hot run's
    assert health.speed == measured.speed  # 1.5 s without a step is no per-task overhead
    assert health.speed is not None
    assert health.speed.overhead_s < 1.0


async def test_after_a_restart_a_loader_comfyui_still_caches_is_no_switch(
    start_emulator: EmulatorFactory, start_service: ServiceFactory, redis: Redis
) -> None:
    emulator = start_emulator("cache-emulator", step_time_s=0.02)
    service = start_service(emulator.url, node_id="cached")
    await run(service, graphs.txt2img("cold", seed=1))
    learned = await wait_for_condition(
        health_where(redis, "cached", lambda health: bool(health.profile.load_s)),
        what="the checkpoint's switch cost",
    )
    assert learned.speed is None  # a cold run teaches no overhead
    service.kill()

    # Unknown to the new service, but ComfyUI still holds the checkpoint: its loader is cached.
    restarted = start_service(emulator.url, node_id="cached")
    await run(restarted, graphs.txt2img("after", seed=2))

    health = await wait_for_condition(
        health_where(
            redis,
            "cached",
            lambda health: health.started_at > learned.started_at and health.speed is not None,
        ),
        what="the speed of a hot run after the restart",
    )
    assert health.profile.resident == [graphs.SDXL_CHECKPOINT]
    assert health.profile.load_s == learned.profile.load_s
    assert graph_shape(graphs.txt2img("x")) in health.profile.shape_run_s


async def test_the_learned_profile_is_kept_again_when_redis_lost_it(
    start_emulator: EmulatorFactory, start_service: ServiceFactory, redis: Redis
) -> None:
    """A Redis that came back empty (no persistence) has no learned profile: the service
    writes it again, so a later restart of the service still starts from it."""
    emulator = start_emulator("kept-emulator", step_time_s=0.02)
    service = start_service(emulator.url, node_id="kept")
    await run(service, graphs.solid_image("learn"))

    async def kept() -> bool:
        raw = await redis.get(KEYS.node_profile("kept"))
        shapes = NodeProfile.model_validate_json(raw).shape_run_s if raw else {}
        return graph_shape(graphs.solid_image("x")) in shapes

    await wait_for_condition(kept, what="the learned profile in redis")
    await redis.delete(KEYS.node_profile("kept"))
    await wait_for_condition(kept, what="the learned profile written again")
