"""Reading the nodes from what their services publish in Redis. The dispatcher reads every
node each cycle: a document that did not change is not parsed again, and nodes with the same
capabilities share one object, which the dispatcher checks a graph against once."""

from dataclasses import replace

from redis.asyncio import Redis

from comfy_balancer.dispatcher import _can_run
from comfy_balancer.registry import NodeRegistry, NodeState, NodeView
from comfy_shared.clock import utc_now
from comfy_shared.models import Capabilities, ComfyStatus, NodeHealth
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs

KEYS = RedisKeys("registry")
LOADER = "CheckpointLoaderSimple"
CLASSES = sorted(node["class_type"] for node in graphs.txt2img("x").values())


def offering(*checkpoints: str) -> Capabilities:
    """A node that runs txt2img graphs naming one of ``checkpoints``."""
    return Capabilities(node_classes=CLASSES, models={LOADER: {"ckpt_name": list(checkpoints)}})


def health_of(
    node_id: str, capabilities: Capabilities | None = None, *, cpu_percent: float = 0
) -> NodeHealth:
    return NodeHealth(
        node_id=node_id, url=f"http://{node_id}", version="t", started_at=utc_now(),
        comfyui=ComfyStatus(reachable=True), cpu_percent=cpu_percent, ram_used_bytes=0,
        ram_total_bytes=1, capabilities=capabilities or Capabilities(),
    )  # fmt: skip


async def publish(
    redis: Redis, node_id: str, capabilities: Capabilities, *, cpu_percent: float = 0
) -> None:
    """What a node's service writes."""
    health = health_of(node_id, capabilities, cpu_percent=cpu_percent)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(KEYS.node_health(node_id), health.model_dump_json(), ex=30)
        pipe.zadd(KEYS.nodes(), {node_id: 1})
        await pipe.execute()


def by_id(views: list[NodeView]) -> dict[str, NodeView]:
    return {view.node_id: view for view in views}


async def test_nodes_with_the_same_capabilities_share_one_object(redis: Redis) -> None:
    await publish(redis, "a", offering("sd15.safetensors"))
    await publish(redis, "b", offering("sd15.safetensors"))
    await publish(redis, "c", offering("sdxl.safetensors"))
    nodes = by_id(await NodeRegistry(redis, KEYS, slots=2).read())
    assert nodes["a"].capabilities is nodes["b"].capabilities
    assert nodes["c"].capabilities is not nodes["a"].capabilities
    assert nodes["c"].capabilities.models[LOADER]["ckpt_name"] == ["sdxl.safetensors"]


async def test_a_document_is_parsed_again_only_once_it_changed(redis: Redis) -> None:
    await publish(redis, "a", offering("sd15.safetensors"))
    await publish(redis, "b", offering("sd15.safetensors"))
    registry = NodeRegistry(redis, KEYS, slots=2)
    first = by_id(await registry.read())
    again = by_id(await registry.read())
    assert again["a"].health is first["a"].health

    await publish(redis, "a", offering("sd15.safetensors"), cpu_percent=50)
    await publish(redis, "b", offering("sd15.safetensors", "sdxl.safetensors"))
    changed = by_id(await registry.read())
    assert changed["a"].health is not None
    assert changed["a"].health.cpu_percent == 50
    assert changed["a"].capabilities is first["a"].capabilities  # the same as before
    assert changed["b"].capabilities.models[LOADER]["ckpt_name"] == [
        "sd15.safetensors", "sdxl.safetensors",
    ]  # fmt: skip
    assert changed["b"].capabilities is not changed["a"].capabilities


async def test_each_node_is_judged_by_its_own_capabilities(redis: Redis) -> None:
    """The dispatcher's check, once per capabilities object, still answers for each node."""
    await publish(redis, "a", offering("sd15.safetensors"))
    await publish(redis, "b", offering("sdxl.safetensors"))
    await publish(redis, "c", offering("sd15.safetensors"))
    await publish(redis, "d", Capabilities())
    nodes = await NodeRegistry(redis, KEYS, slots=2).read()
    can_run = _can_run(graphs.txt2img("x", checkpoint="sd15.safetensors"))
    assert {node.node_id: can_run(node) for node in nodes} == {
        "a": True, "b": False, "c": True, "d": False,
    }  # fmt: skip


def test_a_view_s_state_and_free_slots_follow_its_fields() -> None:
    """Worked out once per view: a view made from another (``replace``) works them out again."""
    idle = NodeView("a", health_of("a"), last_seen_ms=0, in_flight=0, slots=2)
    assert (idle.state, idle.free_slots) == (NodeState.READY, 2)
    busy = replace(idle, in_flight=2)
    assert (busy.state, busy.free_slots) == (NodeState.BUSY, 0)
    held = replace(idle, in_flight=1, backlog_s=30.0, prefetch_lead_s=5.0)  # prefetch not open
    assert (held.state, held.free_slots) == (NodeState.READY, 0)
    assert replace(busy, drained=True).state is NodeState.DRAINING
    assert replace(busy, health=None).state is NodeState.DEAD
