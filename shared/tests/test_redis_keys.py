import inspect
from datetime import date

from redis.crc import key_slot

from comfy_shared import redis_keys
from comfy_shared.redis_keys import RedisKeys


def every_key(keys: RedisKeys) -> list[str]:
    """Each builder of the schema called once, with sample arguments."""
    samples = {
        "task_id": "t1", "node_id": "n1", "attempt": 1, "key": "k", "name": "wake",
        "tenant": "acme", "key_id": "k9", "band_rank": 1, "flow": "acme",
        "day": date(2026, 3, 9), "session_sha256": "s256", "scope": "sc",
    }  # fmt: skip
    built = []
    for name, builder in inspect.getmembers(keys, inspect.ismethod):
        if not name.startswith("_"):
            parameters = inspect.signature(builder).parameters
            built.append(builder(**{p: samples[p] for p in parameters}))
    return built


def test_every_key_carries_the_configured_prefix_and_no_two_collide() -> None:
    built = every_key(RedisKeys("stack-a"))

    assert len(built) >= 20
    assert all(key.startswith("stack-a:") for key in built)
    assert len(set(built)) == len(built)


def test_every_key_is_in_the_schema_table() -> None:
    schema = inspect.getdoc(redis_keys)
    assert schema is not None
    placeholder = {
        "t1": "{id}", "n1": "{node}", "k": "{key}", "wake": "{name}", "1": "{n}",
        "acme": "{tenant}", "k9": "{key}", "2026-03-09": "{day}", "s256": "{sha256}",
        "sc": "{scope}",
    }  # fmt: skip
    flow_key = RedisKeys("{p}").queue_flow(1, "acme")
    for key in every_key(RedisKeys("{p}")):
        pattern = ":".join(placeholder.get(part, part) for part in key.split(":"))
        if key == flow_key:
            pattern = "{p}:queue:flow:{n}:{flow}"
        assert pattern in schema, pattern


SPREAD = {  # keys that no script or MULTI joins with the shared state: a slot of their own
    "stack-a:task:{t1}:submit:1",
    "stack-a:idempotency:{acme}:k",
    "stack-a:gateway:uploads:{acme}",
    "stack-a:gateway:live:{t1}",
    "stack-a:key:{k9}:bucket",
    "stack-a:ui:session:{s256}",
    "stack-a:ui:user:{acme}:settings",
    "stack-a:ui:user:{acme}:files",
    "stack-a:ui:user:{acme}:contents",
    "stack-a:ui:user:{acme}:bytes",
    "stack-a:costs:shapes",
    "stack-a:metrics:fleet-lease",
}


def test_on_a_cluster_the_shared_keys_have_one_slot_and_the_others_their_owners() -> None:
    built = every_key(RedisKeys("stack-a", cluster=True))

    shared = [key for key in built if key.startswith("{stack-a}:")]
    assert set(built) - set(shared) == SPREAD
    assert {key_slot(key.encode()) for key in shared} == {key_slot(b"stack-a")}
    assert len({key_slot(key.encode()) for key in SPREAD}) > 5


def test_cluster_names_are_the_plain_names_with_hash_tags() -> None:
    plain = every_key(RedisKeys("stack-a"))
    tagged = every_key(RedisKeys("stack-a", cluster=True))

    assert not any("{" in key for key in plain)
    assert [key.replace("{", "").replace("}", "") for key in tagged] == plain
