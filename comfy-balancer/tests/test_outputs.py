"""Outputs outlive the node that made them: stored by content, served by the balancer with
ranges and validators, listed, and gone (410) once their retention ends."""

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from comfy_shared.clock import now_ms
from comfy_shared.outputs.catalog import OutputCatalog
from comfy_shared.outputs.file_store import FileStore
from comfy_shared.outputs.retention import OutputRetention
from comfy_shared.outputs.s3_store import S3Settings, S3Store
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_until_finished
from comfy_testkit.cluster import Cluster
from comfy_testkit.s3 import S3Server
from comfy_testkit.stack import outputs_dir_for
from comfy_testkit.waiting import wait_for_condition

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_a_node_killed_after_its_task_succeeded_still_has_its_output_served(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"])
    task = await submit(cluster.api, graphs.solid_image(fresh("kept")))
    done = await wait_until_finished(cluster.api, task["id"])
    assert done["status"] == "succeeded", done
    cluster.node("a").kill()  # its ComfyUI's output folder goes with it

    listed = (await cluster.api.get(f"/api/v1/tasks/{task['id']}/outputs")).json()
    whole = await cluster.api.get(listed[0]["url"])

    assert whole.status_code == 200, whole.text
    digest = hashlib.sha256(whole.content).hexdigest()
    assert whole.content.startswith(PNG_SIGNATURE)
    assert [(o["kind"], o["media_type"], o["size"], o["sha256"]) for o in listed] == [
        ("image", "image/png", len(whole.content), digest)
    ]
    assert whole.headers["content-type"] == "image/png"
    assert whole.headers["etag"] == f'"{digest}"'
    assert f'filename="{listed[0]["filename"]}"' in whole.headers["content-disposition"]
    assert done["outputs"] == listed

    deleted = await cluster.api.delete(f"/api/v1/tasks/{task['id']}/outputs")
    gone = await cluster.api.get(listed[0]["url"])
    assert deleted.status_code == 204, deleted.text
    assert (gone.status_code, gone.json()["code"]) == (410, "output_expired")


@pytest.mark.parametrize(
    ("graph", "media_type"),
    [(graphs.solid_mp4, "video/mp4"), (graphs.solid_webm, "video/webm")],
    ids=["mp4", "webm"],
)
async def test_a_video_file_is_stored_listed_as_video_and_downloaded_as_the_node_wrote_it(
    make_cluster: Callable[..., Cluster],
    graph: Callable[..., dict[str, Any]],
    media_type: str,
) -> None:
    cluster = make_cluster(["a"])
    task = await submit(cluster.api, graph(fresh("clip"), frames=4))
    done = await wait_until_finished(cluster.api, task["id"])
    assert done["status"] == "succeeded", done

    listed = (await cluster.api.get(f"/api/v1/tasks/{task['id']}/outputs")).json()
    download = await cluster.api.get(listed[0]["url"])
    [output] = listed
    async with httpx.AsyncClient() as comfyui:  # the file as the node's ComfyUI wrote it
        params = {key: output[key] for key in ("filename", "subfolder", "type")}
        written = await comfyui.get(f"{cluster.node('a').emulator.url}/view", params=params)

    suffix = media_type.removeprefix("video/")
    assert written.status_code == 200
    assert output["filename"].endswith(f"_00001_.{suffix}")
    assert (output["kind"], output["media_type"], output["size"]) == (
        "video",
        media_type,
        len(written.content),
    )
    assert output["sha256"] == hashlib.sha256(written.content).hexdigest()
    assert (download.status_code, download.headers["content-type"]) == (200, media_type)
    assert download.content == written.content
    assert done["outputs"] == listed


TEXT = "a lighthouse at dusk, ünïcode ✓\nsecond line"
PLAIN_TEXT = "text/plain; charset=utf-8"


async def test_a_text_a_node_reported_is_stored_listed_in_order_and_outlives_the_node(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"])
    task = await submit(cluster.api, graphs.solid_image_with_text(fresh("texted"), TEXT))
    done = await wait_until_finished(cluster.api, task["id"])
    assert done["status"] == "succeeded", done
    cluster.node("a").kill()  # a text was never a file there: the store alone serves it

    listed = (await cluster.api.get(f"/api/v1/tasks/{task['id']}/outputs")).json()
    text = await cluster.api.get(listed[0]["url"])
    image = await cluster.api.get(listed[1]["url"])

    encoded = TEXT.encode()
    assert [(o["node_id"], o["kind"], o["type"], o["media_type"]) for o in listed] == [
        ("5", "text", "text", PLAIN_TEXT),  # PreviewAny ran first: history lists it first
        ("3", "image", "output", "image/png"),
    ]
    assert (listed[0]["filename"], listed[0]["size"]) == ("5-text-0.txt", len(encoded))
    assert listed[0]["sha256"] == hashlib.sha256(encoded).hexdigest()
    assert (text.status_code, text.headers["content-type"]) == (200, PLAIN_TEXT)
    assert text.content == encoded
    assert text.headers["etag"] == f'"{listed[0]["sha256"]}"'
    assert 'filename="5-text-0.txt"' in text.headers["content-disposition"]
    assert (image.status_code, image.content[:8]) == (200, PNG_SIGNATURE)
    assert done["outputs"] == listed


async def test_the_text_of_a_failed_task_is_served_from_its_record_not_from_its_node(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(["a"])
    task = await submit(cluster.api, graphs.text_then_runtime_error(fresh("failed"), TEXT))
    done = await wait_until_finished(cluster.api, task["id"])
    assert (done["status"], done["error"]["type"]) == ("failed", "comfyui"), done
    cluster.node("a").kill()

    [output] = done["outputs"]
    text = await cluster.api.get(output["url"])

    assert (output["kind"], output["filename"], output["sha256"]) == ("text", "6-text-0.txt", None)
    assert (text.status_code, text.headers["content-type"]) == (200, PLAIN_TEXT)
    assert text.content == TEXT.encode()


async def test_ranges_and_validators_follow_http(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(["a"])
    task = await submit(cluster.api, graphs.solid_image(fresh("ranged")))
    await wait_until_finished(cluster.api, task["id"])
    url = f"/api/v1/tasks/{task['id']}/outputs/0"
    whole = (await cluster.api.get(url)).content
    etag = f'"{hashlib.sha256(whole).hexdigest()}"'

    async def get(**headers: str) -> httpx.Response:
        return await cluster.api.get(url, headers=headers)

    head = await get(range="bytes=0-7")
    tail = await get(range="bytes=-4")
    unchanged = await get(**{"if-none-match": etag})
    outside = await get(range=f"bytes={len(whole)}-")
    stale_if_range = await get(range="bytes=0-7", **{"if-range": '"another"'})

    assert (head.status_code, head.content) == (206, PNG_SIGNATURE)
    assert head.headers["content-range"] == f"bytes 0-7/{len(whole)}"
    assert (tail.status_code, tail.content) == (206, whole[-4:])
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    assert (outside.status_code, outside.json()["code"]) == (416, "range_not_satisfiable")
    assert outside.headers["content-range"] == f"bytes */{len(whole)}"
    assert (stale_if_range.status_code, stale_if_range.content) == (200, whole)


async def test_identical_outputs_are_stored_once_and_expire_with_their_task_s_ttl(
    make_cluster: Callable[..., Cluster], process_log_dir: Path
) -> None:
    cluster = make_cluster(["a"], balancer_args=["--outputs-sweep-interval-s", "0.2"])
    graph = graphs.solid_image(fresh("twice"))
    first = await submit(cluster.api, graph, output_ttl_s=2)  # the deployment's is a day
    first_done = await wait_until_finished(cluster.api, first["id"])
    second = await submit(cluster.api, graph, output_ttl_s=2)  # the same bytes again
    done = await wait_until_finished(cluster.api, second["id"])
    assert done["outputs"][0]["sha256"] == first_done["outputs"][0]["sha256"]
    blobs = outputs_dir_for(process_log_dir) / "blobs"
    assert len([path for path in blobs.rglob("*") if path.is_file()]) == 1

    async def expired() -> httpx.Response | None:
        answer = await cluster.api.get(f"/api/v1/tasks/{second['id']}/outputs/0")
        return answer if answer.status_code == 410 else None

    gone = await wait_for_condition(expired, timeout_s=15, what="the output's TTL to end")
    assert gone.json()["code"] == "output_expired"

    async def deleted() -> bool:
        return not [path for path in blobs.rglob("*") if path.is_file()]

    await wait_for_condition(deleted, timeout_s=10, what="the blobs deleted")


async def test_the_size_cap_releases_the_oldest_finished_tasks_first(
    redis: Redis, tmp_path: Path
) -> None:
    store = FileStore(tmp_path / "outputs")
    await store.open()
    catalog = OutputCatalog(redis, RedisKeys("test"))
    later = now_ms() + 3_600_000
    held = {}
    for age, task_id in enumerate(["newest", "middle", "oldest"]):
        blob = await store.put(_one(task_id.encode() * 100))  # 600, 600 and 600 bytes
        await catalog.hold(
            task_id, [blob], finished_ms=later - age, expires_ms=later, now_ms=now_ms()
        )
        held[task_id] = blob.digest

    released = await OutputRetention(catalog=catalog, store=store, max_bytes=1000).sweep_once()

    assert released == 2
    assert [await catalog.is_held(t) for t in ("newest", "middle", "oldest")] == [
        True,
        False,
        False,
    ]
    assert await catalog.total_bytes() == 600
    for task_id, digest in held.items():
        present = (store.root / "blobs" / digest[:2] / digest).exists()
        assert present == (task_id == "newest"), task_id


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_outputs_in_an_s3_bucket_outlive_the_node_and_redirect_to_a_presigned_url(
    make_cluster: Callable[..., Cluster], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    admin = S3Store(_bucket_settings(s3_server, bucket))
    await admin.open()
    await admin.client.create_bucket(Bucket=bucket)
    await admin.aclose()
    store_args = [
        *("--outputs-backend", "s3", "--outputs-s3-bucket", bucket),
        *("--outputs-s3-endpoint-url", s3_server.url, "--outputs-s3-region", s3_server.region),
        *("--outputs-s3-addressing-style", "path"),
        *("--outputs-s3-access-key-id", s3_server.access_key_id),
    ]
    for app in ("SERVICE", "BALANCER"):  # a secret is never a command-line flag
        monkeypatch.setenv(f"COMFY_{app}_OUTPUTS_S3_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    cluster = make_cluster(
        ["a"], service_args=store_args, balancer_args=[*store_args, "--outputs-redirect"]
    )
    task = await submit(cluster.api, graphs.solid_image(fresh("bucket")))
    done = await wait_until_finished(cluster.api, task["id"])
    assert done["status"] == "succeeded", done
    cluster.node("a").kill()

    redirect = await cluster.api.get(done["outputs"][0]["url"])
    assert redirect.status_code == 307, redirect.text
    location = redirect.headers["location"]
    assert location.startswith(f"{s3_server.url}/{bucket}/blobs/")
    async with httpx.AsyncClient() as anyone:  # no API key: the URL itself is the grant
        fetched = await anyone.get(location)
    assert fetched.status_code == 200
    assert fetched.content.startswith(PNG_SIGNATURE)
    assert hashlib.sha256(fetched.content).hexdigest() == done["outputs"][0]["sha256"]
    assert fetched.headers["content-type"] == "image/png"


def _bucket_settings(server: S3Server, bucket: str) -> S3Settings:
    return S3Settings(
        bucket=bucket,
        endpoint_url=server.url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        addressing_style="path",
    )
