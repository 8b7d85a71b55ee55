"""What the gateway says the fleet is, on a real two-node cluster: system_stats, models,
features, the reference node's extensions (through its service, cached), the stubs the
frontend boots with, and the frontend's own files as a browser gets them."""

import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_balancer.gateway.features import server_feature_flags
from comfy_balancer.gateway.ui_static import IMMUTABLE, REVALIDATE, frontend_dir
from comfy_emulator.config import MODEL_FOLDERS
from comfy_shared.settings import ApiServerSettings
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import RunningComponent

PROBE_JS = "window.gatewayProbe = 'loaded from node b';\n"


@pytest.fixture
def web_extensions(tmp_path: Path) -> Path:
    """Node b's custom nodes: one pack with a frontend script (node a has none)."""
    pack = tmp_path / "web-extensions" / "gateway-probe"
    (pack / "lib").mkdir(parents=True)
    (pack / "probe.js").write_text(PROBE_JS)
    (pack / "lib" / "helper.js").write_text("export const helper = 1;\n")
    return tmp_path / "web-extensions"


@pytest.fixture
async def cluster(make_cluster: Callable[..., Cluster], web_extensions: Path) -> Cluster:
    node_b = ["--model", "only-b.safetensors", "--model", "shared.safetensors"]
    made = make_cluster(
        ["a", "b"],
        emulator_args={
            "a": ["--model", "only-a.safetensors", "--model", "shared.safetensors"],
            "b": [*node_b, "--web-extensions", str(web_extensions)],
        },
        balancer_args=["--ui-reference-node", "b"],
    )
    await made.nodes_ready(2)
    return made


@pytest.fixture
def api(cluster: Cluster) -> httpx.AsyncClient:
    return cluster.api


async def test_the_catalogue_speaks_for_the_fleet(api: httpx.AsyncClient) -> None:
    stats = (await api.get("/api/system_stats")).json()

    system = stats["system"]
    assert (system["comfyui_version"], system["required_frontend_version"]) == ("0.8.0", "1.35.9")
    assert system["comfy_package_versions"] == [
        {
            "name": "comfyui-frontend-package",
            "installed": version("comfyui-frontend-package"),
            "required": "1.35.9",
        }
    ]
    assert system["pytorch_version"]  # as the nodes' ComfyUI reports it
    assert [(d["name"][-3:], d["type"], d["index"]) for d in stats["devices"]] == [
        ("[a]", "cuda", 0),
        ("[b]", "cuda", 1),
    ]
    bare = (await api.get("/system_stats")).json()
    assert bare["devices"] == stats["devices"]
    await check_models_are_the_union_of_the_nodes(api)
    await check_features_are_the_fixed_dict(api)


async def check_models_are_the_union_of_the_nodes(api: httpx.AsyncClient) -> None:
    folders = await api.get("/api/models")
    checkpoints = await api.get("/models/checkpoints")
    unknown = await api.get("/api/models/no-such-folder")
    experiment = await api.get("/api/experiment/models")
    experiment_files = await api.get("/api/experiment/models/checkpoints")

    assert folders.json() == list(MODEL_FOLDERS)
    assert checkpoints.json() == ["only-a.safetensors", "only-b.safetensors", "shared.safetensors"]
    assert (unknown.status_code, unknown.content) == (404, b"")
    names = [folder["name"] for folder in experiment.json()]
    assert "checkpoints" in names
    assert not {"configs", "custom_nodes"} & set(names)
    assert experiment_files.json()[0] == {"name": "only-a.safetensors", "pathIndex": 0}
    assert (await api.get("/api/embeddings")).json() == []


async def check_features_are_the_fixed_dict(api: httpx.AsyncClient) -> None:
    expected = server_feature_flags(max_upload_bytes=ApiServerSettings().max_body_bytes)

    assert (await api.get("/api/features")).json() == expected
    assert (await api.get("/features")).json() == expected


async def test_extensions_come_from_the_named_reference_node(
    cluster: Cluster, api: httpx.AsyncClient, web_extensions: Path
) -> None:
    listed = await api.get("/api/extensions")
    script = await api.get("/extensions/gateway-probe/probe.js")
    (web_extensions / "gateway-probe" / "probe.js").write_text("changed on the node")
    cached = await api.get("/extensions/gateway-probe/probe.js")
    nested = await api.get("/extensions/gateway-probe/lib/helper.js")
    missing = await api.get("/extensions/gateway-probe/none.js")
    hostile = await api.get("/extensions/gateway-probe/..%2F..%2Fsecret")

    assert listed.json() == [
        "/extensions/gateway-probe/lib/helper.js",
        "/extensions/gateway-probe/probe.js",
    ]
    assert (script.status_code, script.text) == (200, PROBE_JS)
    # Named by its extension (the emulator, like aiohttp, says application/javascript).
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert cached.text == PROBE_JS  # kept: the node is not asked again at once
    assert nested.text == "export const helper = 1;\n"
    assert (missing.status_code, hostile.status_code) == (404, 404)
    service = cluster.node("b").service.url
    async with httpx.AsyncClient(base_url=service) as outsider:
        direct = await outsider.get("/api/v1/comfyui/extensions/gateway-probe/probe.js")
    assert direct.status_code == 401  # the service passes files to its balancers only


async def test_the_frontend_boots_on_stubs_where_the_fleet_has_nothing(
    cluster: Cluster, api: httpx.AsyncClient
) -> None:
    expected: dict[str, Any] = {
        "/api/i18n": {},
        "/i18n": {},
        "/api/workflow_templates": {},
        "/api/global_subgraphs": {},
        "/templates/index.json": [],
        "/templates/index.fr.json": [],
        "/templates/fuse_options.json": None,
        "/internal/logs": "",
        "/internal/logs/raw": {"entries": [], "size": {"cols": 80, "rows": 24}},
        "/internal/folder_paths": {},
        "/internal/files/input": [],
    }

    for path, body in expected.items():
        answer = await api.get(path)
        assert (answer.status_code, answer.json()) == (200, body), path
        assert answer.headers["content-type"] == "application/json", path
    subscribed = await api.patch(
        "/internal/logs/subscribe", json={"clientId": "c", "enabled": True}
    )
    assert subscribed.status_code == 200
    assert (await api.get("/api/internal/logs")).status_code == 404  # no /api form, as in core
    await check_the_frontends_files_as_a_browser_gets_them(cluster)
    await check_the_signed_in_page_is_the_frontends_index(api)


def index_script() -> str:
    index = (frontend_dir() / "index.html").read_text()
    found = re.search(r'src="\./assets/(index-[^"]+\.js)"', index)
    assert found is not None
    return found.group(1)


async def check_the_frontends_files_as_a_browser_gets_them(cluster: Cluster) -> None:
    script = f"/assets/{index_script()}"
    async with httpx.AsyncClient(base_url=cluster.balancer.url) as anyone:
        first = await anyone.get(script, headers={"Accept-Encoding": "gzip"})
        plain = await anyone.get(script, headers={"Accept-Encoding": "identity"})
        again = await anyone.get(script, headers={"If-None-Match": first.headers["etag"]})
        head = await anyone.head(script, headers={"Accept-Encoding": "gzip"})
        font = await anyone.get("/fonts/inter-latin-normal.woff2")
        css = await anyone.get("/materialdesignicons.min.css")
        shim = await anyone.get("/extensions/core/groupNode.js")
        user_css = await anyone.get("/user.css")
        missing = await anyone.get("/assets/no-such-file-0000000.js")
        escape = await anyone.get("/assets/..%2F..%2Findex.html")

    on_disk = (frontend_dir() / "assets" / index_script()).read_bytes()
    assert first.status_code == 200
    assert first.headers["content-encoding"] == "gzip"
    assert first.content == on_disk == plain.content
    assert int(first.headers["content-length"]) < len(on_disk)
    assert "content-encoding" not in plain.headers
    assert first.headers["content-type"] == "text/javascript; charset=utf-8"
    assert first.headers["cache-control"] == IMMUTABLE
    assert first.headers["vary"] == "Accept-Encoding"
    assert (again.status_code, again.content) == (304, b"")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == first.headers["content-length"]
    assert (font.headers["content-type"], font.headers["cache-control"]) == (
        "font/woff2",
        REVALIDATE,
    )
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert shim.content == (frontend_dir() / "extensions" / "core" / "groupNode.js").read_bytes()
    assert (user_css.status_code, user_css.content) == (200, b"")
    assert (missing.status_code, escape.status_code) == (404, 404)


async def check_the_signed_in_page_is_the_frontends_index(api: httpx.AsyncClient) -> None:
    page = await api.get("/")

    assert page.content == (frontend_dir() / "index.html").read_bytes()
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["content-security-policy"] == "frame-ancestors 'self'"


async def test_without_the_ui_the_comfyui_routes_stay(
    start_balancer: Callable[..., RunningComponent],
) -> None:
    headless = start_balancer("balancer-no-ui", extra_args=["--no-ui", "--no-console"])
    console_only = start_balancer("balancer-console", extra_args=["--no-ui"])

    async with httpx.AsyncClient(base_url=headless.url, headers=headless.auth_headers) as api:
        gone = [await api.get(path) for path in ("/", "/signin", f"/assets/{index_script()}")]
        stats = await api.get("/api/system_stats")
        settings = await api.get("/api/settings")
    async with httpx.AsyncClient(base_url=console_only.url) as browser:
        signin = await browser.get("/signin")
        root = await browser.get("/")

    assert [answer.status_code for answer in gone] == [404, 404, 404]
    # The console keeps the sign-in page, which then leads to the console.
    assert (signin.status_code, root.status_code) == (200, 404)
    assert 'name="next" value="/console"' in signin.text
    assert (stats.status_code, settings.status_code) == (200, 200)
