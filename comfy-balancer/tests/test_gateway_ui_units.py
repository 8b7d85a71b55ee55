"""The gateway's browser side, the parts that decide without I/O: the fleet's catalogue as one
server, userdata paths, the same-origin check, the frontend's cache policy. Tables, no mocks."""

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.requests import Request

from comfy_balancer.auth.sessions import is_same_origin
from comfy_balancer.gateway import catalogue_fleet as fleet
from comfy_balancer.gateway.features import server_feature_flags
from comfy_balancer.gateway.ui_static import (
    IMMUTABLE,
    REVALIDATE,
    cache_control_of,
    frontend_dir,
    media_type_of,
)
from comfy_balancer.gateway.userdata_store import (
    InvalidUserPath,
    decode_content,
    encode_content,
    user_directory,
    user_path,
)
from comfy_balancer.registry import NodeView
from comfy_shared.models import Capabilities, ComfyStatus, NodeHealth

GIB = 1024**3


def node(
    node_id: str,
    *,
    live: bool = True,
    version: str | None = "0.8.0",
    frontend: str | None = "1.35.9",
    device: str | None = "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
    folders: dict[str, list[str]] | None = None,
    pytorch: str | None = None,
) -> NodeView:
    health = NodeHealth(
        node_id=node_id,
        url=f"http://{node_id}",
        version="1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        comfyui=ComfyStatus(
            reachable=live,
            version=version,
            required_frontend_version=frontend,
            device=device,
            vram_total_bytes=24 * GIB,
            vram_free_bytes=20 * GIB,
            pytorch_version=pytorch,
        ),
        cpu_percent=0,
        ram_used_bytes=8 * GIB,
        ram_total_bytes=32 * GIB,
        capabilities=Capabilities(model_folders=folders or {}),
    )
    return NodeView(node_id=node_id, health=health, last_seen_ms=0, in_flight=0, slots=2)


def dead(node_id: str) -> NodeView:
    return NodeView(node_id=node_id, health=None, last_seen_ms=0, in_flight=0, slots=2)


def stats(nodes: list[NodeView]) -> dict[str, Any]:
    return fleet.system_stats(nodes, frontend_version="1.58.1", fallback_version="0.1.0")


# --- /system_stats ---------------------------------------------------------------------------

CORE_SYSTEM_KEYS = {
    "os", "ram_total", "ram_free", "comfyui_version", "required_frontend_version",
    "installed_templates_version", "required_templates_version", "comfy_package_versions",
    "python_version", "pytorch_version", "embedded_python", "deploy_environment", "argv",
}  # fmt: skip
CORE_DEVICE_KEYS = {
    "name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"
}  # fmt: skip


def test_system_stats_keeps_every_key_core_sends_with_its_type() -> None:
    answer = stats([node("a"), node("b")])

    assert set(answer["system"]) == CORE_SYSTEM_KEYS
    assert all(set(device) == CORE_DEVICE_KEYS for device in answer["devices"])
    system = answer["system"]
    assert isinstance(system["argv"], list)
    assert isinstance(system["embedded_python"], bool)
    assert (system["ram_total"], system["ram_free"]) == (64 * GIB, 48 * GIB)


@pytest.mark.parametrize(
    ("fleet_versions", "required", "comfyui"),
    [
        ([("0.8.0", "1.35.9"), ("0.26.0", "1.42.2")], "1.42.2", "0.8.0"),
        ([("0.26.0", "1.9.10"), ("0.8.0", "1.10.1")], "1.10.1", "0.8.0"),  # not as text
        ([("0.26.0", None), ("weird", "1.2")], "1.2", "0.26.0"),  # unknown ones ignored
        ([(None, None)], None, "0.1.0"),  # the balancer's version when no node tells
    ],
)
def test_system_stats_requires_the_highest_frontend_and_reports_the_lowest_comfyui(
    fleet_versions: list[tuple[str | None, str | None]], required: str | None, comfyui: str
) -> None:
    nodes = [
        node(f"n{i}", version=version, frontend=frontend)
        for i, (version, frontend) in enumerate(fleet_versions)
    ]

    system = stats(nodes)["system"]

    assert (system["required_frontend_version"], system["comfyui_version"]) == (required, comfyui)
    assert system["comfy_package_versions"] == [
        {"name": "comfyui-frontend-package", "installed": "1.58.1", "required": required}
    ]


def test_system_stats_lists_one_device_per_live_node_in_id_order() -> None:
    nodes = [node("b", device="cpu"), dead("c"), node("a"), node("d", live=False)]

    devices = stats(nodes)["devices"]

    assert [(d["name"], d["type"], d["index"]) for d in devices] == [
        ("cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync [a]", "cuda", 0),
        ("cpu [b]", "cpu", 1),
    ]
    assert (devices[0]["vram_total"], devices[0]["vram_free"]) == (24 * GIB, 20 * GIB)


def test_system_stats_never_shows_the_balancers_command_line() -> None:
    assert stats([node("a")])["system"]["argv"] == ["comfy-balancer"]


def test_system_stats_of_no_live_node_is_still_whole() -> None:
    answer = stats([dead("a")])

    assert answer["devices"] == []
    assert set(answer["system"]) == CORE_SYSTEM_KEYS


# --- models and embeddings -------------------------------------------------------------------


def test_model_folders_and_files_are_the_union_of_the_live_nodes() -> None:
    nodes = [
        node("a", folders={"checkpoints": ["x.safetensors"], "loras": ["l1.pt"]}),
        node("b", folders={"checkpoints": ["y.safetensors", "x.safetensors"], "vae": []}),
        node("c", live=False, folders={"checkpoints": ["from-a-down-node.ckpt"], "gone": []}),
    ]

    assert fleet.model_folders(nodes) == ["checkpoints", "loras", "vae"]
    assert fleet.models_in(nodes, "checkpoints") == ["x.safetensors", "y.safetensors"]
    assert fleet.models_in(nodes, "vae") == []
    assert fleet.models_in(nodes, "gone") is None


def test_embeddings_are_named_without_their_extension() -> None:
    nodes = [
        node("a", folders={"embeddings": ["easy.pt", "sub/neg.safetensors"]}),
        node("b", folders={"embeddings": ["easy.safetensors"]}),
    ]

    assert fleet.embeddings(nodes) == ["easy", "sub/neg"]
    assert fleet.embeddings([node("c")]) == []


@pytest.mark.parametrize(
    ("wanted", "live", "expected"),
    [
        (None, ["b", "a", "c"], "a"),
        ("c", ["b", "a", "c"], "c"),
        ("z", ["b", "a"], "a"),  # the named node is gone: the first live one answers
        (None, [], None),
    ],
)
def test_the_reference_node_is_the_named_one_while_it_lives_else_the_first(
    wanted: str | None, live: list[str], expected: str | None
) -> None:
    nodes = [node(node_id) for node_id in live] + [node("0-down", live=False), dead("0-dead")]

    chosen = fleet.reference_node(nodes, wanted)

    assert (chosen.node_id if chosen else None) == expected


def test_the_feature_flags_say_what_the_gateway_does_not_do() -> None:
    flags = server_feature_flags(max_upload_bytes=1234)

    assert flags == {
        "supports_preview_metadata": True,
        "max_upload_size": 1234,
        "supports_model_type_tags": False,
        "node_replacements": False,
        "assets": False,
        "extension": {"manager": {"supports_v4": False}},
    }
    flags["extension"]["manager"]["supports_v4"] = True  # a caller changing its copy
    assert server_feature_flags(max_upload_bytes=1)["extension"]["manager"]["supports_v4"] is False


# --- userdata paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["a.json", "workflows/a.json", "workflows/sub dir/é.json", ".index.json", "a..b"]
)
def test_a_relative_path_is_kept_as_it_is(path: str) -> None:
    assert user_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "", "/etc/passwd", "../x", "workflows/../../x", "a/./b", "a//b", "a/", "..", ".",
        "a\\..\\b", "C:\\x", "a\x00b", "a\nb", "x" * 513,
    ],
)  # fmt: skip
def test_a_path_that_could_leave_the_users_folder_is_refused(path: str) -> None:
    with pytest.raises(InvalidUserPath):
        user_path(path)


def test_a_directory_may_end_with_a_slash_but_not_be_the_root() -> None:
    assert user_directory("workflows/") == "workflows"
    for root in ("/", "", "//"):
        with pytest.raises(InvalidUserPath):
            user_directory(root)


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (b'{"a": 1}', "utf-8"),
        ("é".encode(), "utf-8"),
        (b"\x89PNG\xff\x00", "base64"),
        (b"", "utf-8"),
    ],
)
def test_content_is_stored_as_text_when_it_is_text_else_as_base64(
    content: bytes, encoding: str
) -> None:
    stored, used = encode_content(content)

    assert used == encoding
    assert decode_content(stored, used) == content
    if used == "base64":
        assert base64.b64decode(stored) == content


# --- the same-origin check -------------------------------------------------------------------


def request(headers: dict[str, str], scheme: str = "http") -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return Request(
        {"type": "http", "method": "POST", "scheme": scheme, "path": "/", "headers": raw}
    )


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({"Sec-Fetch-Site": "same-origin", "Host": "class.lan:8000"}, True),
        ({"Sec-Fetch-Site": "same-site", "Host": "class.lan:8000"}, False),
        ({"Sec-Fetch-Site": "cross-site", "Origin": "http://class.lan:8000"}, False),
        ({"Sec-Fetch-Site": "none", "Host": "class.lan:8000"}, False),
        ({"Origin": "http://class.lan:8000", "Host": "class.lan:8000"}, True),
        ({"Origin": "http://CLASS.lan:8000", "Host": "class.lan:8000"}, True),
        ({"Origin": "https://class.lan", "Host": "class.lan"}, True),  # TLS ended by a proxy
        ({"Origin": "https://class.lan", "Host": "class.lan:443"}, True),
        ({"Origin": "http://class.lan:8001", "Host": "class.lan:8000"}, False),
        ({"Origin": "http://evil.example", "Host": "class.lan:8000"}, False),
        ({"Origin": "null", "Host": "class.lan:8000"}, False),
        ({"Origin": "http://class.lan:99999", "Host": "class.lan:99999"}, False),
        ({"Host": "class.lan:8000"}, False),  # neither header: not a browser's page
    ],
)
def test_a_change_with_a_cookie_must_come_from_a_page_of_this_origin(
    headers: dict[str, str], same: bool
) -> None:
    assert is_same_origin(request(headers)) is same


# --- the frontend's files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "hashed_names", "cache"),
    [
        ("index-B2rHQ9Sn.js", True, IMMUTABLE),
        ("vendor-datadog-CS-2l-KQ.js", True, IMMUTABLE),
        ("GraphView-Bt0QZMwI.js.map", True, IMMUTABLE),
        ("main-BmGK0m7p.css", True, IMMUTABLE),
        ("favicon.ico", True, REVALIDATE),
        ("index.html", False, REVALIDATE),
        ("materialdesignicons.min.css", False, REVALIDATE),
        ("ui-settings.js", False, REVALIDATE),  # looks hashed, outside Vite's folder
        ("core/groupNode.js", False, REVALIDATE),
    ],
)
def test_only_files_named_by_their_content_are_kept_for_good(
    path: str, hashed_names: bool, cache: str
) -> None:
    assert cache_control_of(path, hashed_names=hashed_names) == cache


def test_every_file_of_the_pinned_frontend_has_a_known_media_type() -> None:
    unknown = {
        path.suffix
        for path in frontend_dir().rglob("*")
        if path.is_file() and media_type_of(path.name) == "application/octet-stream"
    }

    assert unknown == set()
    assert media_type_of("a.JS") == "text/javascript; charset=utf-8"
    assert media_type_of("a.map") == "application/json"
