"""``run_batch`` against a real emulated fleet: outputs mirrored, reruns, retries, 429s and
existing files."""

import dataclasses
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import comfy_shared
from comfy_stack.batch import (
    MANIFEST_NAME,
    BatchSpec,
    FileRecord,
    MappingError,
    OutputConflict,
    graph_mapping,
    read_manifest,
    run_batch,
    template_mapping,
)
from comfy_stack.client import AsyncStackClient
from comfy_testkit.cluster import Cluster
from comfy_testkit.image_files import image_bytes, write_tree
from comfy_testkit.stack import AUTH_HEADERS

pytestmark = pytest.mark.timeout(120)  # a fleet of processes starts and runs a few batches

FIXED = ["prompt=an oil painting", "steps=2"]
TEMPLATES = Path(comfy_shared.__file__).parent / "templates"


@pytest.fixture
async def fleet(make_cluster: Callable[..., Cluster]) -> Cluster:
    cluster = make_cluster(("a", "b"))
    await cluster.nodes_ready(2)
    return cluster


@pytest.fixture
async def client(fleet: Cluster) -> AsyncIterator[AsyncStackClient]:
    api = httpx.AsyncClient(base_url=fleet.balancer.url, headers=AUTH_HEADERS, timeout=30)
    yield AsyncStackClient(api)
    await api.aclose()


async def spec_for(client: AsyncStackClient, tmp_path: Path, **options: Any) -> BatchSpec:
    mapping = await template_mapping(client, "img2img-sdxl", FIXED)
    return BatchSpec(roots=(tmp_path / "in",), mapping=mapping, output_root=tmp_path / "out",
                     **options)  # fmt: skip


async def task_ids(fleet: Cluster) -> list[str]:
    listing = (await fleet.api.get("/api/v1/tasks", params={"limit": 500})).json()
    return [task["id"] for task in listing["tasks"]]


async def test_outputs_mirror_the_input_tree_and_a_rerun_skips_done_files(
    fleet: Cluster, client: AsyncStackClient, tmp_path: Path
) -> None:
    write_tree(tmp_path / "in", ["a/b/photo.jpg", "a/c.png", "d.webp", "sub/e.png"])
    (tmp_path / "in" / "sub" / "batch.json").write_text('{"prompt": "from the folder"}')
    (tmp_path / "in" / "a" / "fake.png").write_bytes(image_bytes(".jpg"))
    spec = await spec_for(client, tmp_path, concurrency=3)

    first = await run_batch(spec, client)

    out = tmp_path / "out"
    mirrored = ["a/b/photo.png", "a/c.png", "d.png", "sub/e.png"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(mirrored)
    for name in mirrored:
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    assert (first.done, first.already_done, first.failed, first.interrupted) == (4, 0, [], 0)
    assert first.outputs == 4
    assert [r["reason"] for r in first.rejected] == ["not a PNG file (its bytes are JPEG)"]
    records = read_manifest(out)
    assert {name: r.state for name, r in records.items()} == {
        "a/b/photo.jpg": "done", "a/c.png": "done", "d.webp": "done", "sub/e.png": "done",
    }  # fmt: skip
    folder_task = (await fleet.api.get(f"/api/v1/tasks/{records['sub/e.png'].task_id}")).json()
    assert folder_task["params"]["prompt"] == "from the folder"
    assert folder_task["params"]["steps"] == 2
    submitted = await task_ids(fleet)
    assert len(submitted) == 4

    again = await run_batch(spec, client)

    assert (again.done, again.already_done, again.outputs) == (0, 4, 0)
    assert await task_ids(fleet) == submitted


async def test_existing_outputs_are_never_overwritten_unless_asked(
    fleet: Cluster, client: AsyncStackClient, tmp_path: Path
) -> None:
    write_tree(tmp_path / "in", ["a.png", "b.png"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.png").write_bytes(b"mine")
    spec = await spec_for(client, tmp_path)

    with pytest.raises(OutputConflict, match=r"b\.png"):
        await run_batch(spec, client)

    assert await task_ids(fleet) == []
    assert (tmp_path / "out" / "b.png").read_bytes() == b"mine"
    summary = await run_batch(await spec_for(client, tmp_path, overwrite=True), client)
    assert summary.done == 2
    assert (tmp_path / "out" / "b.png").read_bytes().startswith(b"\x89PNG")


async def test_parameters_are_typed_and_checked_before_anything_is_sent(
    fleet: Cluster, client: AsyncStackClient, tmp_path: Path
) -> None:
    with pytest.raises(MappingError, match=r"steps.*expected an integer"):
        await template_mapping(client, "img2img-sdxl", ["prompt=x", "steps=many"])
    with pytest.raises(MappingError, match=r"denoise.*above the maximum"):
        await template_mapping(client, "img2img-sdxl", ["prompt=x", "denoise=3"])
    with pytest.raises(MappingError, match="unknown parameter"):
        await template_mapping(client, "img2img-sdxl", ["colour=red"])
    write_tree(tmp_path / "in", ["ok/a.png", "bad/b.png"])
    (tmp_path / "in" / "bad" / "batch.json").write_text('{"steps": 1000}')
    with pytest.raises(MappingError, match=r"bad/batch\.json: parameter 'steps'"):
        await run_batch(await spec_for(client, tmp_path), client)
    assert await task_ids(fleet) == []
    mapping = await template_mapping(client, "img2img-sdxl", ["prompt=42", "steps=3"])
    assert mapping.params == {"prompt": "42", "steps": 3}  # the schema says a prompt is text


async def test_429_is_waited_out_and_every_file_is_done(fleet: Cluster, tmp_path: Path) -> None:
    created = await fleet.api.post(
        "/api/v1/keys", json={"name": "batcher", "limits": {"submits_per_minute": 10}}
    )
    client = AsyncStackClient.connect(fleet.balancer.url, created.json()["key"])
    write_tree(tmp_path / "in", [f"{n:02}.png" for n in range(11)])
    try:
        summary = await run_batch(await spec_for(client, tmp_path, concurrency=11), client)
    finally:
        await client.aclose()

    assert (summary.done, summary.failed) == (11, [])
    assert summary.throttled >= 1  # the eleventh submit was told to come back in 6 s
    assert summary.elapsed_s >= 4
    assert len(await task_ids(fleet)) == 11


async def test_a_failing_file_is_retried_up_to_n_attempts_over_runs(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(("a",), balancer_args=["--max-image-bytes", "2000"])
    await cluster.nodes_ready(1)
    write_tree(tmp_path / "in", ["flaky.png"])
    noise = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    noise.save(tmp_path / "in" / "huge.png")  # about 12 kB: noise does not compress
    async with httpx.AsyncClient(base_url=cluster.balancer.url, headers=AUTH_HEADERS) as api:
        client = AsyncStackClient(api)
        await cluster.nodes[0].control.fail_next(2, exception_type="RuntimeError", message="boom")

        first = await run_batch(await spec_for(client, tmp_path, retries=1), client)
        rerun_same = await run_batch(await spec_for(client, tmp_path, retries=1), client)
        rerun_more = await run_batch(await spec_for(client, tmp_path, retries=2), client)

    failures = {failure.file: failure for failure in first.failed}
    assert failures["flaky.png"].attempts == 2
    assert "boom" in failures["flaky.png"].error["message"]
    assert (failures["huge.png"].attempts, failures["huge.png"].final) == (1, True)
    assert failures["huge.png"].error["code"] == "invalid_params"  # never retried
    assert (rerun_same.done, len(rerun_same.failed)) == (0, 2)  # N attempts spent
    assert (rerun_more.done, [f.file for f in rerun_more.failed]) == (1, ["huge.png"])
    assert read_manifest(tmp_path / "out")["flaky.png"].attempt == 3


async def test_an_api_format_graph_takes_each_image_through_the_gateway_upload(
    fleet: Cluster, client: AsyncStackClient, tmp_path: Path
) -> None:
    graph_file = tmp_path / "graph.json"
    graph_file.write_text((TEMPLATES / "img2img-sdxl.json").read_text())
    write_tree(tmp_path / "in", ["one.png", "two.jpg"])
    mapping = graph_mapping(graph_file, "10", ["6.text=a linocut", "3.steps=2"])
    spec = BatchSpec(roots=(tmp_path / "in",), mapping=mapping, output_root=tmp_path / "out")

    summary = await run_batch(spec, client)
    again = await run_batch(spec, client)

    assert (summary.done, summary.failed, again.already_done) == (2, [], 2)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["one.png", "two.png"]
    task_id = read_manifest(tmp_path / "out")["two.jpg"].task_id
    task = (await fleet.api.get(f"/api/v1/tasks/{task_id}")).json()
    assert task["status"] == "succeeded"
    with pytest.raises(MappingError, match="names no node"):
        graph_mapping(graph_file, "10", ["99.text=x"])


async def test_an_api_that_stops_answering_stops_the_run_and_the_rerun_resumes(
    make_cluster: Callable[..., Cluster], start_balancer: Callable[..., Any], tmp_path: Path
) -> None:
    """Failing the files instead would send them again under new keys (new tasks) while the
    first ones may run on: the run stops, and the rerun sends the same requests."""
    cluster = make_cluster(("a",))
    await cluster.nodes_ready(1)
    write_tree(tmp_path / "in", ["a.png", "b.png"])
    async with httpx.AsyncClient(base_url=cluster.balancer.url, headers=AUTH_HEADERS) as api:
        client = AsyncStackClient(api)
        spec = await spec_for(client, tmp_path, transient_tries=2)
        cluster.balancer.kill()

        stopped = await run_batch(spec, client)

        assert (stopped.unreachable, stopped.failed, stopped.interrupted) == (True, [], 2)
        assert "no answer after 2 tries" in str(stopped.aborted)
        records = read_manifest(tmp_path / "out").values()
        assert [(r.state, r.attempt) for r in records] == [("submitting", 1)] * 2
        port = int(cluster.balancer.url.rsplit(":", 1)[1])
        start_balancer("balancer-again", port=port)
        await cluster.nodes_ready(1)

        resumed = await run_batch(spec, client)

    assert (resumed.done, resumed.failed) == (2, [])
    assert {(r.state, r.attempt) for r in read_manifest(tmp_path / "out").values()} == {("done", 1)}


async def test_a_request_sent_before_a_crash_is_answered_by_the_same_task(
    fleet: Cluster, client: AsyncStackClient, tmp_path: Path
) -> None:
    """The manifest says ``submitting`` (the process died before the answer was recorded):
    the rerun sends the same request under the same key, and the task that exists answers."""
    write_tree(tmp_path / "in", ["a.png"])
    spec = await spec_for(client, tmp_path)
    await run_batch(spec, client)
    done = read_manifest(tmp_path / "out")["a.png"]
    manifest = tmp_path / "out" / MANIFEST_NAME
    crashed = FileRecord("a.png", done.key, "submitting", attempt=1)
    manifest.write_text(json.dumps(dataclasses.asdict(crashed)) + "\n")
    (tmp_path / "out" / "a.png").unlink()

    rerun = await run_batch(spec, client)

    assert (rerun.done, rerun.failed) == (1, [])
    assert read_manifest(tmp_path / "out")["a.png"].task_id == done.task_id
    assert await task_ids(fleet) == [done.task_id]
    assert (tmp_path / "out" / "a.png").exists()
