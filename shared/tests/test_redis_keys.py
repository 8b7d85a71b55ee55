from comfy_shared.redis_keys import RedisKeys


def test_every_key_carries_the_configured_prefix() -> None:
    keys = RedisKeys("stack-a")
    built = [
        *keys.task_keys("t1"),
        keys.recent_tasks(),
        keys.node_health("n1"),
        keys.node_active("n1"),
        keys.nodes(),
        keys.pending_queue(),
        keys.idempotency("k"),
        keys.signal("wake"),
    ]
    assert all(key.startswith("stack-a:") for key in built)
    assert len(set(built)) == len(built)


def test_task_keys_start_with_the_record() -> None:
    keys = RedisKeys()
    assert keys.task_keys("abc")[0] == keys.task("abc") == "comfy:task:abc"
