import inspect

from comfy_shared import redis_keys
from comfy_shared.redis_keys import RedisKeys


def every_key(keys: RedisKeys) -> list[str]:
    """Each builder of the schema called once, with sample arguments."""
    samples = {"task_id": "t1", "node_id": "n1", "attempt": 1, "key": "k", "name": "wake"}
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
    for key in every_key(RedisKeys("{p}")):
        pattern = key.replace(":t1", ":{id}").replace(":n1", ":{node}").replace(":k", ":{key}")
        pattern = pattern.replace(":wake", ":{name}").replace(":submit:1", ":submit:{n}")
        assert pattern in schema, pattern
