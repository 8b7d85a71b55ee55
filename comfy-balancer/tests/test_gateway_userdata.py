"""Each tenant's ComfyUI settings and userdata files: the store against a real Redis (exact
keys, limits under concurrency), then ComfyUI's routes on a real balancer with API keys."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from comfy_balancer.gateway.userdata_store import (
    SETTINGS_MAX_IDS,
    SettingsTooLarge,
    UserdataLimits,
    UserFileExists,
    UserFileMissing,
    UserFiles,
    UserFileTooLarge,
    UserSettings,
    UserStorageFull,
)
from comfy_shared.redis_keys import RedisKeys
from comfy_testkit.api_keys import KeyClient, KeyClients
from comfy_testkit.cluster import Cluster

KEYS = RedisKeys("t")
LIMITS = UserdataLimits(max_file_bytes=1000, max_bytes=5000, max_files=10)


def files_of(redis: Redis, tenant: str = "alice", limits: UserdataLimits = LIMITS) -> UserFiles:
    return UserFiles(redis, KEYS, tenant, limits)


async def stored(redis: Redis, tenant: str = "alice") -> dict[str, Any]:
    """Everything the store keeps for a tenant, as Redis holds it."""
    return {
        "files": {
            path: json.loads(meta)
            for path, meta in (await redis.hgetall(KEYS.ui_files(tenant))).items()
        },
        "contents": await redis.hgetall(KEYS.ui_contents(tenant)),
        "bytes": await redis.get(KEYS.ui_bytes(tenant)),
    }


# --- the store -------------------------------------------------------------------------------


async def test_a_written_file_is_three_keys_of_its_tenant_and_nothing_else(redis: Redis) -> None:
    written = await files_of(redis).write("workflows/a.json", b'{"a": 1}', overwrite=False)

    assert written.meta.size == 8
    assert await stored(redis) == {
        "files": {"workflows/a.json": written.meta.model_dump()},
        "contents": {"workflows/a.json": '{"a": 1}'},
        "bytes": "8",
    }
    assert sorted(await redis.keys("*")) == sorted(
        [KEYS.ui_files("alice"), KEYS.ui_contents("alice"), KEYS.ui_bytes("alice")]
    )
    assert [await redis.ttl(key) for key in await redis.keys("*")] == [-1, -1, -1]  # durable


async def test_overwriting_keeps_the_creation_time_and_refusing_changes_nothing(
    redis: Redis,
) -> None:
    files = files_of(redis)
    first = await files.write("a.json", b"12345", overwrite=True)
    second = await files.write("a.json", b"12", overwrite=True)
    before = await stored(redis)

    with pytest.raises(UserFileExists):
        await files.write("a.json", b"other", overwrite=False)

    assert second.meta.created == first.meta.created
    assert second.meta.modified >= first.meta.modified
    assert (second.meta.size, before["bytes"]) == (2, "2")
    assert await stored(redis) == before


async def test_bytes_that_are_not_text_come_back_as_they_went_in(redis: Redis) -> None:
    files = files_of(redis)
    png = b"\x89PNG\r\n\x1a\n\x00\xff\xfe"

    await files.write("pictures/x.png", png, overwrite=True)
    file, content = await files.read("pictures/x.png")

    assert (content, file.meta.encoding, file.meta.size) == (png, "base64", len(png))


async def test_a_file_over_the_limit_or_past_the_quota_is_refused(redis: Redis) -> None:
    files = files_of(redis, limits=UserdataLimits(max_file_bytes=100, max_bytes=150, max_files=2))
    await files.write("a", b"x" * 100, overwrite=True)

    with pytest.raises(UserFileTooLarge):
        await files.write("b", b"x" * 101, overwrite=True)
    with pytest.raises(UserStorageFull):
        await files.write("b", b"x" * 51, overwrite=True)  # 151 bytes in all
    await files.write("b", b"x" * 50, overwrite=True)
    with pytest.raises(UserStorageFull):
        await files.write("c", b"", overwrite=True)  # a third file
    await files.write("a", b"x" * 10, overwrite=True)  # replacing one frees its bytes

    assert (await stored(redis))["bytes"] == "60"


async def test_concurrent_writes_never_pass_the_quota(redis: Redis) -> None:
    files = files_of(redis, limits=UserdataLimits(max_file_bytes=100, max_bytes=10**6, max_files=7))

    results = await asyncio.gather(
        *(files.write(f"f{i}", b"x" * i, overwrite=True) for i in range(30)),
        return_exceptions=True,
    )

    kept = [result for result in results if not isinstance(result, BaseException)]
    refused = [result for result in results if isinstance(result, BaseException)]
    assert len(kept) == 7
    assert all(isinstance(error, UserStorageFull) for error in refused)
    everything = await stored(redis)
    assert len(everything["files"]) == 7
    assert int(everything["bytes"]) == sum(file.meta.size for file in kept)


async def test_moving_takes_content_and_times_and_may_replace_only_when_told(
    redis: Redis,
) -> None:
    files = files_of(redis)
    moved = await files.write("workflows/a.json", b"aaa", overwrite=True)
    await files.write("workflows/b.json", b"bbbbb", overwrite=True)

    with pytest.raises(UserFileExists):
        await files.move("workflows/a.json", "workflows/b.json", overwrite=False)
    with pytest.raises(UserFileMissing):
        await files.move("workflows/none.json", "workflows/c.json", overwrite=True)
    same = await files.move("workflows/a.json", "workflows/a.json", overwrite=False)
    result = await files.move("workflows/a.json", "workflows/b.json", overwrite=True)

    assert same.meta == moved.meta
    assert (result.path, result.meta) == ("workflows/b.json", moved.meta)
    assert await stored(redis) == {
        "files": {"workflows/b.json": moved.meta.model_dump()},
        "contents": {"workflows/b.json": "aaa"},
        "bytes": "3",
    }


async def test_deleting_frees_the_bytes_and_a_missing_file_is_not_found(redis: Redis) -> None:
    files = files_of(redis)
    await files.write("a.json", b"abc", overwrite=True)

    await files.delete("a.json")
    with pytest.raises(UserFileMissing):
        await files.delete("a.json")
    with pytest.raises(UserFileMissing):
        await files.read("a.json")

    assert await stored(redis) == {"files": {}, "contents": {}, "bytes": "0"}


async def test_a_listing_goes_as_deep_as_asked(redis: Redis) -> None:
    files = files_of(redis)
    for path in ("workflows/b.json", "workflows/a.json", "workflows/sub/c.json", "workflowsx/d"):
        await files.write(path, b"{}", overwrite=True)

    shallow = await files.listing("workflows", recurse=False)
    deep = await files.listing("workflows", recurse=True)

    assert [file.path for file in shallow] == ["workflows/a.json", "workflows/b.json"]
    assert [file.path for file in deep] == [
        "workflows/a.json",
        "workflows/b.json",
        "workflows/sub/c.json",
    ]
    assert await files.listing("nothing", recurse=True) == []


async def test_tenants_keep_apart(redis: Redis) -> None:
    await files_of(redis, "alice").write("a.json", b"alice's", overwrite=True)
    await UserSettings(redis, KEYS, "alice").merge({"Comfy.X": 1})

    assert await files_of(redis, "bob").listing("workflows", recurse=True) == []
    with pytest.raises(UserFileMissing):
        await files_of(redis, "bob").read("a.json")
    assert await UserSettings(redis, KEYS, "bob").all() == {}


SETTING_VALUES: list[Any] = [
    0.1, 1e-7, 18446744073709551615, [], {}, "", None, True, "Größe 🎨", {"a": [1, {"b": None}]},
]  # fmt: skip


async def test_settings_merge_and_come_back_exactly_as_sent(redis: Redis) -> None:
    settings = UserSettings(redis, KEYS, "alice")
    await settings.merge({"Keep": "me", "Comfy.A": 1})

    await settings.merge({f"Comfy.{i}": value for i, value in enumerate(SETTING_VALUES)})
    await settings.merge({"Comfy.A": 2})

    assert await settings.all() == {
        "Keep": "me",
        "Comfy.A": 2,
        **{f"Comfy.{i}": value for i, value in enumerate(SETTING_VALUES)},
    }
    assert await settings.get("Comfy.0") == 0.1
    assert await settings.get("never.set") is None


async def test_settings_past_their_bounds_are_refused_whole(redis: Redis) -> None:
    settings = UserSettings(redis, KEYS, "alice")
    await settings.merge({"Keep": "me"})

    with pytest.raises(SettingsTooLarge):
        await settings.merge({f"s{i}": i for i in range(SETTINGS_MAX_IDS)})
    with pytest.raises(SettingsTooLarge):
        await settings.merge({"big": "x" * (2 * 1024 * 1024)})

    assert await settings.all() == {"Keep": "me"}


# --- the routes ------------------------------------------------------------------------------


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A balancer alone (these routes need no node), small userdata limits."""
    return make_cluster(
        (),
        balancer_args=["--ui-userdata-max-file-bytes", "2048", "--ui-userdata-max-files", "4"],
    )


async def test_a_workflow_saved_under_an_encoded_path_is_one_file(keys: KeyClients) -> None:
    for prefix in ("/api", ""):
        await check_a_workflow_saved_under_an_encoded_path(
            await keys.make(f"user{prefix[1:]}"), prefix
        )


async def check_a_workflow_saved_under_an_encoded_path(alice: KeyClient, prefix: str) -> None:
    body = b'{"nodes": [], "extra": {"x": 1}}'

    saved = await alice.post(
        f"{prefix}/userdata/workflows%2Fmy%20flow.json?overwrite=false&full_info=true", content=body
    )
    again = await alice.post(f"{prefix}/userdata/workflows%2Fmy%20flow.json?overwrite=false")
    listed = await alice.get(
        f"{prefix}/userdata?dir=workflows&recurse=true&split=false&full_info=true"
    )
    read = await alice.get(f"{prefix}/userdata/workflows%2Fmy%20flow.json")
    decoded = await alice.get(f"{prefix}/userdata/workflows/my%20flow.json")

    assert saved.status_code == 200, saved.text
    info = saved.json()
    assert (info["path"], info["size"]) == ("workflows/my flow.json", len(body))
    assert info["created"] == info["modified"] > 1_700_000_000_000
    assert (again.status_code, again.text) == (409, "File already exists")
    assert listed.json() == [{**info, "path": "my flow.json"}]
    assert (read.status_code, read.content) == (200, body)
    assert read.headers["content-type"] == "application/json"
    assert read.headers["content-disposition"] == "attachment"
    assert read.headers["x-content-type-options"] == "nosniff"
    assert decoded.status_code == 404  # two segments: no such route, as in ComfyUI


async def test_listings_in_each_shape_core_answers(keys: KeyClients) -> None:
    alice = await keys.make("alice")
    for path in ("workflows%2Fa.json", "workflows%2Fsub%2Fb.json"):
        assert (await alice.post(f"/api/userdata/{path}", content=b"{}")).status_code == 200

    plain = await alice.get("/api/userdata?dir=workflows/&recurse=true")
    shallow = await alice.get("/api/userdata?dir=workflows")
    split = await alice.get("/api/userdata?dir=workflows&recurse=true&split=true")
    missing = await alice.get("/api/userdata?dir=templates&recurse=true&full_info=true")
    no_dir = await alice.get("/api/userdata")

    assert plain.json() == ["a.json", "sub/b.json"]
    assert shallow.json() == ["a.json"]
    assert split.json() == [["a.json", "a.json"], ["sub/b.json", "sub", "b.json"]]
    assert (missing.status_code, missing.json()) == (200, [])
    assert (no_dir.status_code, no_dir.text) == (400, "Directory not provided")


async def test_moving_and_deleting_through_the_routes(keys: KeyClients) -> None:
    alice = await keys.make("alice")
    await alice.post("/api/userdata/workflows%2Fa.json", content=b"a")
    await alice.post("/api/userdata/workflows%2Fb.json", content=b"bb")

    move = "/api/userdata/workflows%2Fa.json/move/workflows%2F{}.json?overwrite=false"
    clash = await alice.post(move.format("b"))
    moved = await alice.post(move.format("c"))
    gone = await alice.get("/api/userdata/workflows%2Fa.json")
    deleted = await alice.delete("/userdata/workflows%2Fb.json")
    deleted_again = await alice.delete("/userdata/workflows%2Fb.json")

    assert (clash.status_code, moved.status_code, moved.json()) == (409, 200, "workflows/c.json")
    assert gone.status_code == 404
    assert (deleted.status_code, deleted_again.status_code) == (204, 404)
    listed = await alice.get("/api/userdata?dir=workflows&recurse=true")
    assert listed.json() == ["c.json"]


OUT_OF_THE_USERS_FOLDER = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "workflows%2F..%2F..%2Fx",
    "..%5C..%5Cx",
    "%2E%2E",
    "a%00b",
]


async def test_a_path_out_of_the_users_folder_is_refused(keys: KeyClients) -> None:
    alice = await keys.make("alice")
    await alice.post("/api/userdata/a.json", content=b"{}")

    for raw in OUT_OF_THE_USERS_FOLDER:
        written = await alice.post(f"/api/userdata/{raw}", content=b"x")
        read = await alice.get(f"/api/userdata/{raw}")
        moved_to = await alice.post(f"/api/userdata/a.json/move/{raw}")
        listed = await alice.get(f"/api/userdata?dir={raw}")

        assert [r.status_code for r in (written, read, moved_to, listed)] == [403] * 4, raw
    assert (await alice.get("/api/userdata/a.json")).status_code == 200


async def test_sizes_and_counts_are_bounded_per_user(keys: KeyClients) -> None:
    alice = await keys.make("alice")

    too_big = await alice.post("/api/userdata/big.json", content=b"x" * 2049)
    for i in range(4):
        assert (await alice.post(f"/api/userdata/f{i}.json", content=b"{}")).status_code == 200
    fifth = await alice.post("/api/userdata/f4.json", content=b"{}")

    assert too_big.status_code == 413
    assert fifth.status_code == 507
    assert "4 userdata files" in fifth.text


async def test_served_files_never_run_as_this_origins_pages(keys: KeyClients) -> None:
    alice = await keys.make("alice")
    await alice.post("/api/userdata/user.css", content=b"body { color: red }")
    await alice.post("/api/userdata/x.html", content=b"<script>alert(1)</script>")
    await alice.post("/api/userdata/x.svg", content=b"<svg onload='alert(1)'/>")

    css = await alice.get("/api/userdata/user.css")
    page = await alice.get("/api/userdata/x.html")
    svg = await alice.get("/api/userdata/x.svg")

    assert (css.headers["content-type"], css.headers["content-disposition"]) == (
        "text/css; charset=utf-8",
        "inline",
    )
    for answer in (page, svg):
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"] == "attachment"


async def test_settings_routes_read_json_whatever_the_content_type(keys: KeyClients) -> None:
    alice = await keys.make("alice")

    one = await alice.post("/api/settings/Comfy.Sidebar%2FLocation", content=b'"right"')
    many = await alice.post(
        "/settings",
        content=b'{"Comfy.A": [1, 2], "Comfy.B": {"x": 0.5}}',
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    not_an_object = await alice.post("/api/settings", content=b"[1]")
    not_json = await alice.post("/api/settings/Comfy.C", content=b"{nope")

    assert (one.status_code, many.status_code) == (200, 200)
    assert (await alice.get("/api/settings")).json() == {
        "Comfy.Sidebar/Location": "right",
        "Comfy.A": [1, 2],
        "Comfy.B": {"x": 0.5},
    }
    assert (await alice.get("/settings/Comfy.A")).json() == [1, 2]
    assert (await alice.get("/api/settings/Comfy.Sidebar%2FLocation")).json() == "right"
    unset = await alice.get("/api/settings/Never.Set")
    assert (unset.status_code, unset.text) == (200, "null")
    assert (not_an_object.status_code, not_json.status_code) == (400, 400)


async def test_users_are_api_keys(keys: KeyClients) -> None:
    alice = await keys.make("alice")

    listed = await alice.get("/api/users")
    made = await alice.post("/users", json={"username": "mallory"})

    assert listed.json() == {"storage": "server", "migrated": True}
    assert made.status_code == 400
    assert "error" in made.json()


async def test_each_tenant_sees_only_its_own_state(keys: KeyClients) -> None:
    alice = await keys.make("alice")
    alice_again = await keys.make("alice-laptop", tenant="alice")
    bob = await keys.make("bob")
    await alice.post("/api/userdata/workflows%2Fsecret.json", content=b'{"mine": true}')
    await alice.post("/api/settings/Comfy.ColorPalette", content=b'"dark"')

    def view(client: KeyClient) -> list[Any]:
        return [
            client.get("/api/userdata?dir=workflows&recurse=true"),
            client.get("/api/userdata/workflows%2Fsecret.json"),
            client.get("/api/settings"),
        ]

    alices = await asyncio.gather(*view(alice_again))
    bobs = await asyncio.gather(*view(bob))

    assert [a.status_code for a in alices] == [200, 200, 200]
    assert alices[0].json() == ["secret.json"]
    assert alices[2].json() == {"Comfy.ColorPalette": "dark"}
    assert [b.status_code for b in bobs] == [200, 404, 200]
    assert (bobs[0].json(), bobs[2].json()) == ([], {})
    deleted = await bob.delete("/api/userdata/workflows%2Fsecret.json")
    assert deleted.status_code == 404
    assert (await alice.get("/api/userdata/workflows%2Fsecret.json")).status_code == 200


async def test_without_a_key_or_session_every_user_route_is_401(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.balancer.url) as anonymous:
        answers = await asyncio.gather(
            anonymous.get("/api/users"),
            anonymous.get("/api/settings"),
            anonymous.post("/api/settings/x", content=b"1"),
            anonymous.get("/api/userdata?dir=workflows"),
            anonymous.get("/api/userdata/a.json"),
            anonymous.post("/api/userdata/a.json", content=b"x"),
            anonymous.delete("/userdata/a.json"),
        )

    assert [answer.status_code for answer in answers] == [401] * len(answers)
