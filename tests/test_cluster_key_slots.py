"""Every Redis script and MULTI touches keys of one hash slot, as Redis Cluster requires.

The guard runs each script of the project once, through the code that calls it, with the key
schema named for a cluster (``RedisKeys(cluster=True)``), against a real (single) Redis, and
records what every script call and every MULTI was given. It fails when

- a call names keys of two slots (computed with redis-py's ``key_slot``, the cluster's CRC16);
- an argument that is a key or a key prefix (a script builds a key from it: a task listing
  reads the records its index names) starts with the shared slot's tag but hashes elsewhere;
- a script of the source (a module-level ``LuaScript``, or a raw script string), or a source
  file with a MULTI, was not run here: a new one must be added to this exercise, so it is
  checked too. A second test finds commands that a cluster client refuses in a pipeline.

``tests/test_redis_cluster.py`` runs the stack on a real three-primary cluster as well.
"""

import importlib
import pkgutil
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.cluster import PIPELINE_BLOCKED_COMMANDS
from redis.commands.core import AsyncScript
from redis.crc import key_slot

import comfy_balancer
import comfy_service
import comfy_shared
from comfy_balancer.auth.keys import KeyStore, NewKey
from comfy_balancer.auth.rate_limit import SubmitRateLimiter
from comfy_balancer.costs import CostModel
from comfy_balancer.gateway.live import LiveOutputs
from comfy_balancer.gateway.uploads import UploadName, Uploads
from comfy_balancer.gateway.userdata_store import UserdataLimits, UserFiles, UserSettings
from comfy_balancer.webhooks.outbox import Outbox
from comfy_shared import task_listing
from comfy_shared.clock import now_ms
from comfy_shared.lifecycle import Cancelled, Placed
from comfy_shared.lua import LuaScript
from comfy_shared.models import NodeSpeed, TaskRecord
from comfy_shared.outputs.catalog import OutputCatalog
from comfy_shared.outputs.file_store import FileStore
from comfy_shared.outputs.store import StoredBlob
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_store import TaskStore

KEYS = RedisKeys("comfy", cluster=True)
SOURCES = [Path(package.__path__[0]) for package in (comfy_shared, comfy_balancer, comfy_service)]
SHARED_SLOT = key_slot(KEYS.root.encode())


@dataclass
class Call:
    what: str
    keys: list[str]
    args: list[Any]
    caller: str = ""
    """Of a MULTI: the project's source file that sent it."""


def project_caller() -> str:
    """The innermost source file of the project on the stack."""
    frame = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if any(path.is_relative_to(root) for root in SOURCES):
            return str(path)
        frame = frame.f_back  # type: ignore[assignment]
    return ""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every script call and every MULTI of the test, as sent."""
    recorded: list[Call] = []
    run_script, run_pipeline = AsyncScript.__call__, Pipeline.execute

    async def script(
        self: AsyncScript, keys: Any = None, args: Any = None, client: Any = None
    ) -> Any:
        recorded.append(Call(str(self.script), list(keys or []), list(args or [])))
        return await run_script(self, keys=keys, args=args, client=client)

    async def execute(self: Pipeline, raise_on_error: bool = True) -> Any:
        if self.is_transaction:
            commands = [[str(part) for part in args] for args, _ in self.command_stack]
            recorded.append(Call("MULTI", [], commands, caller=project_caller()))
        return await run_pipeline(self, raise_on_error)

    monkeypatch.setattr(AsyncScript, "__call__", script)
    monkeypatch.setattr(Pipeline, "execute", execute)
    return recorded


async def test_every_script_and_multi_touches_one_slot(
    redis: Redis, redis_url: str, calls: list[Call], tmp_path: Path
) -> None:
    await run_every_script(redis, tmp_path)

    with redis_sync.Redis.from_url(redis_url, decode_responses=True) as plain:
        for call in calls:
            keys = call.keys if call.what != "MULTI" else multi_keys(plain, call.args)
            slots = {key_slot(key.encode()) for key in keys}
            assert len(slots) <= 1, f"keys of {len(slots)} slots: {keys}\n{call.what[:400]}"
            for arg in call.args:
                if isinstance(arg, str) and arg.startswith(KEYS.root) and keys:
                    assert key_slot(arg.encode()) in slots, f"{arg} elsewhere\n{call.what[:400]}"
    assert any(call.what == "MULTI" for call in calls)
    sources = [call.what for call in calls]
    missing = [name for name, body in project_scripts() if not any(body in s for s in sources)]
    assert not missing, f"scripts not run by this guard (add them): {missing}"
    multis = {call.caller for call in calls if call.what == "MULTI"}
    unchecked = {str(path) for path in sources_with_multi()} - multis - MULTI_RUN_ELSEWHERE
    assert not unchecked, f"MULTIs not run by this guard (add them): {sorted(unchecked)}"


def multi_keys(plain: redis_sync.Redis, commands: list[list[str]]) -> list[str]:
    """The keys of a MULTI's commands, as Redis itself finds them (COMMAND GETKEYS)."""
    found: list[str] = []
    for command in commands:
        found += [str(key) for key in plain.command_getkeys(*command)]
    return found


async def run_every_script(redis: Redis, tmp_path: Path) -> None:
    """Each script through the code that runs it (queue, store, catalog, gateway, auth,
    webhooks), on tasks that reach each of its branches that touch keys."""
    store = TaskStore(redis, KEYS)
    queue = TaskQueue(redis, KEYS, store)
    keyed = TaskRecord(id="keyed", tenant="acme", key_id="k1", webhook_url="http://h/hook")
    await queue.submit(keyed, {"1": {"class_type": "X", "inputs": {}}})
    await queue.position("keyed")
    assert await queue.claim("keyed", "n1", slots=2) == 1
    await store.apply("keyed", Placed(node_id="n1"))
    await queue.requeue("keyed", "n1")
    await queue.remove("keyed")
    await queue.release("keyed", "n1")
    await store.apply("keyed", Cancelled())  # a keyed end: usage of the key, a webhook
    await store.create(TaskRecord(id="plain", tenant="acme"))
    await store.apply("plain", Cancelled())
    await store.statuses(["keyed", "plain"])
    await store.recent_statuses("acme", 10)
    await store.list_recent("acme", task_listing.TaskFilter(), limit=10)
    await store.create(TaskRecord(id="never-run", tenant="acme"))
    await store.delete(TaskRecord(id="never-run", tenant="acme"))
    api_keys = KeyStore(redis, KEYS)
    await api_keys.revoke((await api_keys.create(NewKey(name="bob"))).id)

    catalog = OutputCatalog(redis, KEYS)
    blob = StoredBlob(digest="ab" * 32, size=3)
    await catalog.hold(
        "keyed", [blob], finished_ms=now_ms(), expires_ms=now_ms() + 1, now_ms=now_ms()
    )
    await catalog.release("keyed", now_ms=now_ms())
    await catalog.abandoned(now_ms=now_ms() + 10**9)

    outbox = Outbox(redis, KEYS)
    (claimed,) = await outbox.claim(now_ms(), lease_ms=1000, batch=10)
    assert await outbox.finish(claimed, "dead", now_ms=now_ms())
    await outbox.requeue("keyed", None, now_ms())

    await CostModel(redis, KEYS).learn(
        {"1": {"class_type": "X"}},
        1.0,
        None,
        NodeSpeed(seconds_per_step=1, overhead_s=0, tasks_measured=1),
    )
    await SubmitRateLimiter(redis, KEYS).take("k1", per_minute=60)
    files = UserFiles(
        redis, KEYS, "acme", UserdataLimits(max_file_bytes=100, max_bytes=1000, max_files=10)
    )
    await files.write("a.json", b"{}", overwrite=False)
    await files.move("a.json", "b.json", overwrite=False)
    await files.read("b.json")
    await files.delete("b.json")
    await UserSettings(redis, KEYS, "acme").merge({"Comfy.Setting": 1})
    blobs = FileStore(tmp_path)
    await blobs.open()
    uploads = Uploads(redis=redis, keys=KEYS, store=blobs, catalog=catalog, hold_s=60)
    await uploads.save("acme", UploadName.of("in.png"), b"png", overwrite=False)
    await LiveOutputs(redis, KEYS, retention_s=60).announce(
        "keyed", "9", {"images": [{"filename": "o.png", "subfolder": "", "type": "output"}]}
    )


MULTI_RUN_ELSEWHERE = {
    str(Path(comfy_service.__path__[0]) / "health.py"),
}
"""A node's health publisher, too entangled to build here: its MULTI runs on a real cluster in
``tests/test_redis_cluster.py`` (a node is seen only once it went through)."""


def sources_with_multi() -> Iterator[Path]:
    for path in (file for root in SOURCES for file in root.rglob("*.py")):
        if "pipeline(transaction=True)" in path.read_text():
            yield path


def project_scripts() -> Iterator[tuple[str, str]]:
    """(name, body) of every script defined at module level in the project's packages: each
    ``LuaScript`` and each string that calls ``redis.call``."""
    seen: set[str] = set()
    for package in (comfy_shared, comfy_balancer, comfy_service):
        for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module_info.name.endswith("__main__"):
                continue  # runs its process when imported
            module = importlib.import_module(module_info.name)
            for name, value in vars(module).items():
                body = value.body if isinstance(value, LuaScript) else value
                if isinstance(body, str) and "redis.call(" in body and body not in seen:
                    seen.add(body)
                    yield f"{module_info.name}.{name}", body.strip()


def test_no_pipeline_holds_a_command_a_cluster_pipeline_refuses() -> None:
    """A cluster client refuses some commands in a pipeline (scripts, MGET, PUBLISH, ...): they
    go out on their own or side by side. Pipelines are always bound as ``pipe`` (checked
    here too), so their commands are found in the source."""
    blocked = {command.replace(" ", "_").lower() for command in PIPELINE_BLOCKED_COMMANDS}
    found = []
    for path in (file for root in SOURCES for file in root.rglob("*.py")):
        text = path.read_text()
        unnamed = re.findall(r"\.pipeline\([^)]*\)(?! as pipe:)", text)
        called = set(re.findall(r"\bpipe\.(\w+)\(", text)) & blocked
        scripts = re.findall(r"client=pipe\b", text)
        found += [f"{path.name}: {what}" for what in [*unnamed, *sorted(called), *scripts]]
    assert not found
