"""The fleet catalog over a real Redis: nodes publish health documents and object_info as
their services do (the emulator's object_info, with per-node model files), and the catalog
merges them, reads each document only when a node's hash changes, and validates at the door.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from comfy_balancer.fleet_catalog import FleetCatalog
from comfy_balancer.object_info_merge import MergeMode
from comfy_balancer.registry import NodeRegistry
from comfy_emulator.config import DEFAULT_CHECKPOINTS, default_models
from comfy_emulator.files import make_folders
from comfy_emulator.nodes import build_registry
from comfy_emulator.nodes.base import NodeEnv
from comfy_shared.clock import utc_now
from comfy_shared.comfyui import PromptRejected
from comfy_shared.comfyui.validation import Dialect
from comfy_shared.models import Capabilities, ComfyStatus, NodeHealth
from comfy_shared.node_object_info import PackedObjectInfo, stage_write
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs

KEYS = RedisKeys()
JsonDict = dict[str, Any]


@pytest.fixture
def object_info_with(tmp_path: Path) -> Any:
    """The emulator's object_info (as JSON on the wire) with these extra checkpoints."""

    def make(*checkpoints: str) -> JsonDict:
        folders = make_folders(*(str(tmp_path / d) for d in ("in", "out", "tmp")))
        models = default_models() | {"checkpoints": (*DEFAULT_CHECKPOINTS, *checkpoints)}
        env, registry = NodeEnv(folders, models), build_registry()
        info = {name: registry.object_info(name, env) for name in registry.names()}
        decoded: JsonDict = json.loads(json.dumps(info))
        return decoded

    return make


async def publish(
    redis: Redis, node_id: str, object_info: JsonDict | None, *, version: str = "0.8.0"
) -> None:
    """What a node's service writes: its health document and, beside it, its object_info."""
    packed = PackedObjectInfo.pack(object_info) if object_info is not None else None
    health = NodeHealth(
        node_id=node_id, url=f"http://{node_id}", version="t", started_at=utc_now(),
        comfyui=ComfyStatus(reachable=True, version=version),
        cpu_percent=0, ram_used_bytes=0, ram_total_bytes=1,
        capabilities=Capabilities(object_info_sha256=packed.sha256 if packed else None),
    )  # fmt: skip
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(KEYS.node_health(node_id), health.model_dump_json(), ex=30)
        pipe.zadd(KEYS.nodes(), {node_id: 1})
        if packed is not None:
            stage_write(pipe, KEYS, node_id, packed, 30)
        await pipe.execute()


def catalog_on(redis: Redis, merge: MergeMode = "union") -> FleetCatalog:
    # max_age_s=0: every call reads the node list again, as if a second had passed.
    return FleetCatalog(redis, KEYS, NodeRegistry(redis, KEYS, slots=2), merge=merge, max_age_s=0)


def checkpoints(info: JsonDict) -> list[str]:
    options: list[str] = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    return options


async def test_a_node_s_document_is_read_once_and_again_only_when_its_hash_changes(
    redis: Redis, object_info_with: Any
) -> None:
    catalog = catalog_on(redis)
    first = object_info_with()
    await publish(redis, "a", first)
    for _ in range(5):
        assert await catalog.merged() == first
    assert catalog.reads == 1
    body = await catalog.merged_body()  # encoded once, sent as is to every caller
    assert await catalog.merged_body() is body
    assert json.loads(body) == first

    await publish(redis, "b", first)  # the same install on a second node: nothing to read
    await catalog.merged()
    assert (catalog.reads, (await catalog.view()).nodes) == (1, ("a", "b"))

    await publish(redis, "a", object_info_with("new.safetensors"))  # a restart, a new model
    for _ in range(3):
        assert "new.safetensors" in checkpoints(await catalog.merged())
    assert catalog.reads == 2


async def test_union_and_intersection_of_two_installs(redis: Redis, object_info_with: Any) -> None:
    await publish(redis, "a", object_info_with("only-a.safetensors"))
    await publish(redis, "b", object_info_with("only-b.safetensors"))

    union = checkpoints(await catalog_on(redis, "union").merged())
    common = checkpoints(await catalog_on(redis, "intersection").merged())

    # a's list (the emulator sorts it, as ComfyUI does), then what only b has
    assert union == [*sorted([*DEFAULT_CHECKPOINTS, "only-a.safetensors"]), "only-b.safetensors"]
    assert common == sorted(DEFAULT_CHECKPOINTS)
    assert (await catalog_on(redis).node_class("SaveImage") or {})["output_node"] is True
    assert await catalog_on(redis).node_class("NoSuchNode") is None


async def test_dead_nodes_and_nodes_without_a_document_do_not_count(
    redis: Redis, object_info_with: Any
) -> None:
    catalog = catalog_on(redis)
    assert await catalog.validate(graphs.solid_image("x")) is None  # nothing to check against
    await publish(redis, "old", None)  # a service that publishes no object_info
    assert (await catalog.view()).nodes == ()

    await publish(redis, "a", object_info_with("only-a.safetensors"))
    await publish(redis, "b", object_info_with("only-b.safetensors"))
    await redis.delete(KEYS.node_health("b"))  # b died
    assert (await catalog.view()).nodes == ("a",)
    assert "only-b.safetensors" not in checkpoints(await catalog.merged())


async def test_a_document_not_stored_yet_is_read_once_it_is(
    redis: Redis, object_info_with: Any
) -> None:
    catalog = catalog_on(redis)
    await publish(redis, "a", object_info_with())
    await redis.delete(KEYS.node_object_info("a"))  # named by the health, not (yet) stored
    assert (await catalog.view()).nodes == ()

    await publish(redis, "a", object_info_with())
    assert (await catalog.view()).nodes == ("a",)
    assert catalog.reads == 1


async def test_check_refuses_as_comfyui_would_and_accepts_a_partly_valid_graph(
    redis: Redis, object_info_with: Any
) -> None:
    await publish(redis, "a", object_info_with())
    catalog = catalog_on(redis)

    with pytest.raises(PromptRejected) as refused:
        await catalog.check(graphs.invalid_width("x"))
    assert refused.value.error["type"] == "prompt_outputs_failed_validation"
    assert refused.value.node_errors["1"]["errors"][0]["type"] == "value_smaller_than_min"

    partly = await catalog.check(graphs.partly_invalid("y"))
    assert partly is not None
    assert (partly.outputs, list(partly.node_errors)) == (["3"], ["4"])


@pytest.mark.parametrize(
    ("versions", "error_type"),
    [(("0.26.0", "0.26.0"), "missing_node_type"), (("0.26.0", "0.8.0"), "invalid_prompt")],
)
async def test_the_fleet_words_a_missing_class_as_its_oldest_comfyui(
    redis: Redis, object_info_with: Any, versions: tuple[str, str], error_type: str
) -> None:
    for node_id, version in zip(("a", "b"), versions, strict=True):
        await publish(redis, node_id, object_info_with(), version=version)
    catalog = catalog_on(redis)
    graph = graphs.solid_image("z") | {"9": {"class_type": "Upscaler", "inputs": {}}}

    result = await catalog.validate(graph)

    assert result is not None
    assert (result.error or {}).get("type") == error_type
    expected = Dialect.CURRENT if error_type == "missing_node_type" else Dialect.V0_8
    assert (await catalog.view()).dialect is expected
