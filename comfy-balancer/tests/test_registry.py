"""Reading the nodes from what their services publish in Redis. The dispatcher reads every
node each cycle: a document that did not change is not parsed again, and nodes with the same
capabilities share one object, which the dispatcher checks a graph against once."""

from redis.asyncio import Redis

from comfy_balancer.dispatcher import _can_run
from comfy_balancer.registry import NodeRegistry, NodeView
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


async def publish(
    redis: Redis, node_id: str, capabilities: Capabilities, *, cpu_percent: float = 0
) -> None:
    """What a node's service writes."""
    health = NodeHealth(
        node_id=node_id, url=f"http://{node_id}", version="t", started_at=utc_now(),
        comfyui=ComfyStatus(reachable=True), cpu_percent=cpu_percent, ram_used_bytes=0,
        ram_total_bytes=1, capabilities=capabilities,
    )  # fmt: skip
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
