"""Input files kept in the output store while their task lives: stored once however many
tasks bring them, never evicted before their task ends, released by the sweep after it; on a
real Redis and a real directory."""

import base64
import hashlib
from pathlib import Path

import pytest
from redis.asyncio import Redis

from comfy_shared.models import InputFile
from comfy_shared.outputs.catalog import OutputCatalog
from comfy_shared.outputs.file_store import FileStore
from comfy_shared.outputs.inputs import InputStash
from comfy_shared.outputs.retention import OutputRetention
from comfy_shared.outputs.store import BlobMissing, StoreUnavailable
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_store import TaskStore
from comfy_testkit.records import on_node, run, succeed

KEYS = RedisKeys("test")
PHOTO = b"\x89PNG\r\n\x1a\n a photo"
MASK = b"\x89PNG\r\n\x1a\n a mask"


@pytest.fixture
async def files(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "outputs")
    await store.open()
    return store


@pytest.fixture
def catalog(redis: Redis) -> OutputCatalog:
    return OutputCatalog(redis, KEYS)


@pytest.fixture
def stash(files: FileStore, catalog: OutputCatalog) -> InputStash:
    return InputStash(store=files, catalog=catalog, hold_s=3600)


@pytest.fixture
def tasks(redis: Redis) -> TaskStore:
    return TaskStore(redis, KEYS)


def stored_blobs(files: FileStore) -> list[str]:
    return sorted(path.name for path in (files.root / "blobs").rglob("*") if path.is_file())


async def create_and_keep(
    stash: InputStash, tasks: TaskStore, task_id: str, inputs: list[InputFile]
) -> dict[str, str]:
    kept = await stash.keep(task_id, inputs)
    await tasks.create(on_node(task_id), {"p": 1}, kept.references)
    return kept.references


async def test_the_same_file_brought_by_many_tasks_is_stored_once(
    stash: InputStash, tasks: TaskStore, files: FileStore
) -> None:
    for number in range(5):
        await create_and_keep(stash, tasks, f"t{number}", [InputFile(f"{number}.png", PHOTO)])

    assert stored_blobs(files) == [hashlib.sha256(PHOTO).hexdigest()]
    references = await tasks.get_inputs("t3")
    assert references == {"3.png": f"sha256:{hashlib.sha256(PHOTO).hexdigest()}"}
    assert await stash.load(references) == [InputFile("3.png", PHOTO)]


async def test_inputs_are_never_evicted_by_the_size_cap_while_their_task_lives(
    stash: InputStash, tasks: TaskStore, files: FileStore, catalog: OutputCatalog
) -> None:
    await create_and_keep(stash, tasks, "t1", [InputFile("a.png", PHOTO)])
    retention = OutputRetention(catalog=catalog, store=files, max_bytes=1)

    assert await retention.sweep_once() == 0

    assert await stash.load(await tasks.get_inputs("t1")) == [InputFile("a.png", PHOTO)]


async def test_the_end_of_a_task_lets_the_sweep_delete_the_inputs_no_other_task_holds(
    stash: InputStash, tasks: TaskStore, files: FileStore, catalog: OutputCatalog
) -> None:
    await create_and_keep(stash, tasks, "t1", [InputFile("a.png", PHOTO), InputFile("b", MASK)])
    await create_and_keep(stash, tasks, "t2", [InputFile("c.png", PHOTO)])
    await run(tasks, "t1")
    await succeed(tasks, "t1")

    assert await OutputRetention(catalog=catalog, store=files, max_bytes=None).sweep_once() == 1

    assert stored_blobs(files) == [hashlib.sha256(PHOTO).hexdigest()]  # t2 still holds it
    with pytest.raises(BlobMissing):
        await files.size_of(hashlib.sha256(MASK).hexdigest())
    assert await catalog.total_bytes() == len(PHOTO)


async def test_a_file_kept_inline_by_an_older_task_still_loads(stash: InputStash) -> None:
    inline = {"old.png": base64.b64encode(PHOTO).decode()}

    assert await stash.load(inline) == [InputFile("old.png", PHOTO)]


async def test_a_file_gone_from_the_store_makes_it_unavailable_naming_the_file(
    stash: InputStash, files: FileStore
) -> None:
    kept = await stash.keep("t1", [InputFile("a.png", PHOTO)])
    await files.delete(hashlib.sha256(PHOTO).hexdigest())

    with pytest.raises(StoreUnavailable, match=r"a\.png"):
        await stash.load(kept.references)


async def test_a_task_without_input_files_stores_and_holds_nothing(
    stash: InputStash, files: FileStore, catalog: OutputCatalog
) -> None:
    assert (await stash.keep("t1", [])).references == {}
    assert stored_blobs(files) == []
    assert not await catalog.is_held("t1:inputs")


async def test_inputs_of_a_task_never_created_go_at_once_but_not_those_of_its_namesake(
    stash: InputStash, tasks: TaskStore, files: FileStore
) -> None:
    refused = await stash.keep("t1", [InputFile("a.png", MASK)])
    await stash.let_go(refused)  # e.g. the queue was full
    assert stored_blobs(files) == []

    await create_and_keep(stash, tasks, "t2", [InputFile("b.png", PHOTO)])
    twin = await stash.keep("t2", [InputFile("b.png", PHOTO)])  # the id is taken
    await stash.let_go(twin)

    assert not twin.held_now
    assert await stash.load(await tasks.get_inputs("t2")) == [InputFile("b.png", PHOTO)]
